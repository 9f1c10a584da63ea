"""Local training on one client: K epochs or gamma iterations of mini-batch SGD.

This is the same procedure under the virtual clock and in deployment; it never looks at time.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.sgd import sgd

from fedtempo.params import flatten, load_vector


@dataclass(frozen=True)
class LocalSpec:
    """How a client trains locally.

    ``iterations > 0`` runs exactly that many mini-batch steps (gamma in MA-FL), cycling through
    fresh permutations of the data; otherwise ``epochs`` full passes (the last batch of a pass may
    be smaller). ``prox_mu > 0`` adds (mu/2)||w - w_start||^2 to the loss (FedProx, FedAsync rho).
    """

    epochs: int = 1
    iterations: int = 0
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0
    prox_mu: float = 0.0

    def num_steps(self, num_samples: int, epochs: int | None = None) -> int:
        """Number of SGD steps on ``num_samples`` samples (``epochs`` overrides the spec's)."""
        if num_samples == 0:
            return 0
        if self.iterations > 0:
            return self.iterations
        k = self.epochs if epochs is None else epochs
        return k * math.ceil(num_samples / self.batch_size)

    def samples_processed(self, num_samples: int, epochs: int | None = None) -> int:
        """How many samples a training on ``num_samples`` samples passes through (for FLOPs)."""
        if self.iterations > 0:
            return self.iterations * min(self.batch_size, num_samples)
        return (self.epochs if epochs is None else epochs) * num_samples


@dataclass(frozen=True)
class Update:
    """What a client sends back (SPEC section 0). ``delta`` = local model - start model.

    ``keep``: for a partial upload (a pruned global part), the boolean mask over the flat vector
    of the entries the upload carries; None means every entry. ``bytes_sent`` and ``energy_j``
    are filled in by the driver once the upload has landed.
    """

    client: int
    task: int
    base_version: int
    delta: torch.Tensor
    num_samples: int
    num_steps: int
    loss: float
    bytes_sent: int = 0
    energy_j: float = 0.0
    keep: torch.Tensor | None = None


def batches(n: int, spec: LocalSpec, steps: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Index batches for ``steps`` SGD steps: successive permutations, cut into batches."""
    out: list[torch.Tensor] = []
    while len(out) < steps:
        perm = torch.randperm(n, generator=generator)
        out.extend(perm.split(spec.batch_size))  # type: ignore[no-untyped-call]
    return out[:steps]


class Sgd:
    """torch.optim.SGD's step through its functional form (``torch.optim.sgd.sgd``, the same
    update with the same numerics). The ``SGD`` class's ``step`` imports torch._dynamo on its
    first call, 1.1 s of CPU in every process that trains: a pool worker's first training, the
    first training of every run, on the critical path."""

    def __init__(self, params: list[nn.Parameter], spec: LocalSpec) -> None:
        self.params = params
        self.spec = spec
        self.momentum: list[torch.Tensor | None] = [None] * len(params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        have = [i for i, p in enumerate(self.params) if p.grad is not None]
        buffers = [self.momentum[i] for i in have]
        sgd(
            [self.params[i] for i in have],
            [self.params[i].grad for i in have],  # type: ignore[misc]
            buffers,
            weight_decay=self.spec.weight_decay,
            momentum=self.spec.momentum,
            lr=self.spec.lr,
            dampening=0.0,
            nesterov=False,
            maximize=False,
        )
        for i, b in zip(have, buffers, strict=True):  # sgd creates the buffers on first use
            self.momentum[i] = b


class _Freezer:
    """Restores the entries of ``start`` outside ``trainable`` after every optimizer step, so
    they stay exactly fixed whatever the optimizer does (momentum, weight decay)."""

    def __init__(self, params: list[nn.Parameter], start: torch.Tensor, trainable: torch.Tensor):
        self.items = []
        offset = 0
        for p in params:
            n = p.numel()
            m = trainable[offset : offset + n].view_as(p)
            if not bool(m.all()):
                self.items.append((p, m, start[offset : offset + n].view_as(p).clone()))
            offset += n

    @torch.no_grad()
    def restore(self) -> None:
        for p, m, p0 in self.items:
            p.copy_(torch.where(m, p, p0))


def train_local(
    model: nn.Module,
    start: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: LocalSpec,
    generator: torch.Generator,
    epochs: int | None = None,
    trainable: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int, float]:
    """Train ``model`` (a workspace; its weights are overwritten) from ``start`` on (x, y).

    Returns (delta, steps, mean training loss). Deterministic given ``generator``'s state.
    ``epochs`` overrides ``spec.epochs`` (adaptive local epochs of AsyncFedED). ``trainable``
    (a boolean mask over the flat vector) freezes every other entry at its start value
    (personal/global phases, pruned entries).
    """
    load_vector(model, start)
    steps = spec.num_steps(len(y), epochs)
    if steps == 0:
        return torch.zeros_like(start), 0, float("nan")
    model.train()
    params = list(model.parameters())
    anchors = [p.detach().clone() for p in params] if spec.prox_mu > 0 else []
    optimizer = Sgd(params, spec)
    freezer = _Freezer(params, start, trainable) if trainable is not None else None
    loss_fn = nn.CrossEntropyLoss()
    total = torch.zeros((), dtype=torch.float64)
    for idx in batches(len(y), spec, steps, generator):
        optimizer.zero_grad()
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        if anchors:
            # Gradient of (mu/2)||w - w0||^2 is mu (w - w0); added directly to the gradient.
            with torch.no_grad():
                for p, p0 in zip(params, anchors, strict=True):
                    if p.grad is not None:
                        p.grad.add_(p.detach() - p0, alpha=spec.prox_mu)
        optimizer.step()
        if freezer is not None:
            freezer.restore()
        total += loss.detach()
    return flatten(model) - start, steps, float(total) / steps


def evaluate(
    model: nn.Module, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor, batch: int = 512
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy loss) of ``params`` on (x, y), ``batch`` samples at a time
    (512: a batch's activations stay in cache; W-sim's 10,000 MNIST test images on cnn-s take
    0.39 s at 512 and 0.68 s at 2048 on one core)."""
    return HeldOut(model, x, y, batch)(params)


@dataclass
class HeldOut:
    """A held-out set and a model workspace to evaluate flat parameter vectors on. Its batches
    can be evaluated in contiguous parts, in other processes too: ``combine`` of the parts, in
    order, gives the same bits as evaluating them all here (the loss is summed batch by batch in
    the same order either way)."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    batch: int = 512

    @property
    def batches(self) -> int:
        return -(-len(self.y) // self.batch)

    def __call__(self, params: torch.Tensor) -> tuple[float, float]:
        return self.combine([self.part(params, 0, self.batches)])

    def parts(self, count: int) -> list[tuple[int, int]]:
        """``count`` contiguous ranges of batches (first, last), as even as they go."""
        cuts = [round(i * self.batches / count) for i in range(count + 1)]
        return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]

    @torch.no_grad()
    def part(self, params: torch.Tensor, first: int, last: int) -> tuple[int, list[float]]:
        """(correct predictions, each batch's summed loss) over batches first .. last - 1."""
        load_vector(self.model, params)
        self.model.eval()
        correct, losses = 0, []
        for start in range(first * self.batch, min(last * self.batch, len(self.y)), self.batch):
            logits = self.model(self.x[start : start + self.batch])
            target = self.y[start : start + self.batch]
            losses.append(float(nn.functional.cross_entropy(logits, target, reduction="sum")))
            correct += int((logits.argmax(dim=1) == target).sum())
        return correct, losses

    def combine(self, parts: list[tuple[int, list[float]]]) -> tuple[float, float]:
        if len(self.y) == 0:
            return float("nan"), float("nan")
        loss_sum = 0.0
        for _, losses in parts:
            for loss in losses:
                loss_sum += loss
        return sum(c for c, _ in parts) / len(self.y), loss_sum / len(self.y)

"""Several clients' local training as one vectorised computation (torch.func vmap).

Each client keeps its own start model, data and batch order (drawn from its own generator exactly
as ``train_local`` draws it); clients with fewer steps or a short last batch are handled by masks,
so every client computes the same SGD trajectory as ``train_local``, up to float rounding (the
batched kernels sum in another order). Pays only where per-client overhead dominates (tiny
models); measure before turning it on (benchmarks/w_sim.py reports it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from fedtempo.client.local import LocalSpec, batches


def _unflatten(model: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """[C, P] stacked vectors -> {name: [C, *shape]}."""
    out, offset = {}, 0
    for name, p in model.named_parameters():
        n = p.numel()
        out[name] = flat[:, offset : offset + n].reshape(flat.shape[0], *p.shape)
        offset += n
    return out


def _flatten(params: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.reshape(v.shape[0], -1) for v in params.values()], dim=1)


def _plan(
    sizes: Sequence[int],
    spec: LocalSpec,
    generators: Sequence[torch.Generator],
    epochs: Sequence[int | None],
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Padded local batch indices [C, S, B], sample mask [C, S, B], steps per client."""
    steps = [spec.num_steps(n, e) for n, e in zip(sizes, epochs, strict=True)]
    total, width = max(steps), spec.batch_size
    idx = torch.zeros((len(sizes), total, width), dtype=torch.int64)
    mask = torch.zeros((len(sizes), total, width))
    for c, (n, k, gen) in enumerate(zip(sizes, steps, generators, strict=True)):
        for s, b in enumerate(batches(n, spec, k, gen)):
            idx[c, s, : len(b)] = b
            mask[c, s, : len(b)] = 1.0
    return idx, mask, steps


def train_batched(
    model: nn.Module,
    starts: torch.Tensor,
    data: Sequence[tuple[torch.Tensor, torch.Tensor]],
    spec: LocalSpec,
    generators: Sequence[torch.Generator],
    epochs: Sequence[int | None] | None = None,
) -> list[tuple[torch.Tensor, int, float]]:
    """Train C clients at once. ``starts``: [C, P]; ``data[c]`` = (x_c, y_c). Returns, per client,
    (delta, steps, mean loss) as ``train_local`` does."""
    count = len(data)
    idx, mask, steps = _plan([len(y) for _, y in data], spec, generators, epochs or [None] * count)
    if max(steps, default=0) == 0:
        return [(torch.zeros_like(starts[c]), 0, float("nan")) for c in range(count)]
    width = spec.batch_size
    xs = torch.stack([x[idx[c].reshape(-1) % max(len(x), 1)] for c, (x, _) in enumerate(data)])
    ys = torch.stack([y[idx[c].reshape(-1) % max(len(y), 1)] for c, (_, y) in enumerate(data)])
    xs = xs.reshape(count, idx.shape[1], width, *xs.shape[2:])
    ys = ys.reshape(count, idx.shape[1], width)

    def loss(
        params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, m: torch.Tensor
    ) -> torch.Tensor:
        ce = nn.functional.cross_entropy(functional_call(model, params, (x,)), y, reduction="none")
        return (ce * m).sum() / m.sum().clamp(min=1.0)

    grads = vmap(grad(loss))
    losses = vmap(loss)
    params = _unflatten(model, starts.clone())
    anchors = {k: v.clone() for k, v in params.items()}
    momentum: dict[str, torch.Tensor] = {}
    loss_sum = torch.zeros(count, dtype=torch.float64)
    for s in range(idx.shape[1]):
        active = (torch.tensor(steps) > s).to(starts.dtype)
        x, y, m = xs[:, s], ys[:, s], mask[:, s]
        with torch.no_grad():
            loss_sum += losses(params, x, y, m).to(torch.float64) * active.to(torch.float64)
        g = grads(params, x, y, m)
        params = _sgd_step(params, g, anchors, momentum, active, spec, first=s == 0)
    deltas = _flatten(params) - starts
    return [
        (deltas[c].detach(), steps[c], float(loss_sum[c]) / steps[c] if steps[c] else float("nan"))
        for c in range(count)
    ]


def _sgd_step(
    params: dict[str, torch.Tensor],
    g: dict[str, torch.Tensor],
    anchors: dict[str, torch.Tensor],
    momentum: dict[str, torch.Tensor],
    active: torch.Tensor,
    spec: LocalSpec,
    first: bool,
) -> dict[str, torch.Tensor]:
    """torch.optim.SGD's update (weight decay, momentum, proximal term), for active clients."""
    out = {}
    for k, p in params.items():
        gk = g[k].detach()
        if spec.prox_mu > 0:
            gk = gk + spec.prox_mu * (p - anchors[k])
        if spec.weight_decay:
            gk = gk + spec.weight_decay * p
        a = active.reshape(-1, *([1] * (p.ndim - 1)))
        if spec.momentum:
            if k not in momentum:
                momentum[k] = gk.clone()
            else:  # clients that have finished keep their buffer
                momentum[k] = torch.where(a > 0, spec.momentum * momentum[k] + gk, momentum[k])
            gk = momentum[k]
        out[k] = (p - spec.lr * a * gk).detach()
    return out

"""Model construction with injected randomness, and FLOP/size profiles."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, _FlopCounterMode

from fedtempo.errors import ConfigError
from fedtempo.models.zoo import MODELS, CharLSTM


def build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, generator: torch.Generator
) -> nn.Module:
    """Build registered model ``name`` with its initial weights drawn from ``generator``.

    PyTorch's initialisers read the global generator, so construction runs inside
    ``torch.random.fork_rng`` seeded from ``generator``: the global state is restored afterwards
    and the weights depend only on ``generator``.
    """
    if name not in MODELS:
        raise ConfigError(f"model.name: unknown model {name!r} (allowed: {', '.join(MODELS)})")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[name](tuple(input_shape), num_classes)


@dataclass(frozen=True)
class ModelProfile:
    """Static costs of a model: parameters, bytes on the wire, FLOPs per sample."""

    name: str
    num_parameters: int
    size_bytes: int
    forward_flops: int  # per sample
    train_flops: int  # per sample: forward + backward

    @property
    def size_bits(self) -> int:
        return 8 * self.size_bytes


def _example_input(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    if isinstance(model, CharLSTM):
        return torch.zeros((1, *input_shape), dtype=torch.int64)
    return torch.zeros((1, *input_shape), dtype=torch.float32)


def _lstm_forward_flops(model: nn.Module, seq_len: int) -> int:
    """FLOPs of the gate matrix products of every nn.LSTM in ``model`` for one sequence.

    FlopCounterMode does not see inside the fused CPU LSTM kernel, so these are added by hand:
    per step and layer, 4 gates x (input + hidden) x hidden multiply-adds.
    """
    total = 0
    for module in model.modules():
        if isinstance(module, nn.LSTM):
            for layer in range(module.num_layers):
                width = module.input_size if layer == 0 else module.hidden_size
                total += seq_len * 2 * 4 * module.hidden_size * (width + module.hidden_size)
    return total


def _grouped_conv_overcount(model: nn.Module, counter: FlopCounterMode) -> int:
    """FLOPs FlopCounterMode adds in excess for grouped convolutions (torch 2.13): it counts the
    weight gradient of a convolution with g groups as if it were dense, g times its true cost
    (which equals the forward's). Measured on a depthwise 3x3 conv: 129x the forward, not 2x."""
    counts = counter.get_flop_counts()
    root = type(model).__name__
    excess = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1:
            if not module.weight.requires_grad:
                continue
            key = f"{root}.{name}" if name else root
            forward = counts.get(key, {}).get(torch.ops.aten.convolution, 0)
            excess += (module.groups - 1) * forward
    return excess


@contextlib.contextmanager
def _no_dynamo_import() -> Iterator[None]:
    """torch wraps every dispatch mode's ``__torch_dispatch__`` so that torch.compile does not
    trace into it, and that wrapper imports torch._dynamo on its first call: 0.9 s of a run's
    start-up, for a count that compiles nothing. While no one has imported torch._dynamo, the
    wrapper is handed the plain function it would have made (its own cache slot), and the slot
    is cleared afterwards, so that a later compile still gets the real wrapper."""
    raw = getattr(_FlopCounterMode.__torch_dispatch__, "__wrapped__", None)
    if raw is None or "torch._dynamo" in sys.modules or hasattr(raw, "__dynamo_disable"):
        yield
        return
    raw.__dynamo_disable = raw
    try:
        yield
    finally:
        del raw.__dynamo_disable


def count_flops(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(forward, forward + backward) FLOPs of ``model`` on ``example``; the backward is taken
    from ``sum(output)``, with the input's gradient counted only if ``example`` requires it."""
    with _no_dynamo_import():
        return _count_flops(model, example)


def _count_flops(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    counter = FlopCounterMode(display=False)
    with counter:
        model(example)
    forward = counter.get_total_flops()
    counter = FlopCounterMode(display=False)
    with counter:
        model(example).sum().backward()
    train = counter.get_total_flops() - _grouped_conv_overcount(model, counter)
    model.zero_grad(set_to_none=True)
    return int(forward), int(train)


def profile_model(name: str, model: nn.Module, input_shape: tuple[int, ...]) -> ModelProfile:
    """Count forward and forward+backward FLOPs of one sample with FlopCounterMode.

    Backward of the first layer w.r.t. its input is not needed in training and not counted.
    LSTM gates are counted analytically (backward = 2x forward), see ``_lstm_forward_flops``.
    """
    forward, train = count_flops(model, _example_input(model, input_shape))
    lstm = _lstm_forward_flops(model, input_shape[0]) if isinstance(model, CharLSTM) else 0
    forward, train = forward + lstm, train + 3 * lstm
    params = list(model.parameters())
    return ModelProfile(
        name=name,
        num_parameters=sum(p.numel() for p in params),
        size_bytes=sum(p.numel() * p.element_size() for p in params),
        forward_flops=int(forward),
        train_flops=int(train),
    )

"""Splittable models: a model as an ordered list of named blocks; cut l keeps blocks 1..l on the
client and the rest on the server (SPEC section D). l = L (every block on the client) is plain FL.

A splittable model is an ``nn.Sequential`` of named ``nn.Sequential`` blocks whose parameters
come in the same order as the unsplit network's, so the flat parameter vector (``fedtempo.params``)
is the same, and FedAvg and SplitFed runs are directly comparable.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from fedtempo.errors import ConfigError

# Blocks of the zoo's sequential models, as (name, number of consecutive layers).
BLOCKS: dict[str, list[tuple[str, int]]] = {
    "cnn-s": [("conv1", 3), ("conv2", 3), ("fc1", 3), ("fc2", 1)],
}


# Zoo models built as named blocks already.
SPLIT_NATIVE = ("effnetv2-tiny",)


def split_blocks(model: nn.Module, blocks: Sequence[tuple[str, int]]) -> nn.Sequential:
    """Group the layers of a sequential ``model`` into named blocks (the layers are reused, not
    copied)."""
    if not isinstance(model, nn.Sequential):
        raise ConfigError(f"model: only sequential models can be split, got {type(model).__name__}")
    layers = list(model)
    if sum(n for _, n in blocks) != len(layers):
        raise ValueError(
            f"blocks cover {sum(n for _, n in blocks)} layers, model has {len(layers)}"
        )
    out: OrderedDict[str, nn.Module] = OrderedDict()
    i = 0
    for name, n in blocks:
        out[name] = nn.Sequential(*layers[i : i + n])
        i += n
    return nn.Sequential(out)


def cuts(model: nn.Sequential) -> list[int]:
    """The legal cut points 1..L of a splittable model."""
    return list(range(1, len(model) + 1))


def check_cut(model: nn.Sequential, cut: int) -> None:
    if not 1 <= cut <= len(model):
        names = ", ".join(f"{i + 1}={n}" for i, n in enumerate(dict(model.named_children())))
        raise ConfigError(f"cut {cut} is not a legal cut point (1..{len(model)}: {names})")


def client_part(model: nn.Sequential, cut: int) -> nn.Sequential:
    """Blocks 1..cut (shares the model's modules)."""
    check_cut(model, cut)
    part = model[:cut]
    assert isinstance(part, nn.Sequential)
    return part


def server_part(model: nn.Sequential, cut: int) -> nn.Sequential:
    """Blocks cut+1..L (empty for plain FL)."""
    check_cut(model, cut)
    part = model[cut:]
    assert isinstance(part, nn.Sequential)
    return part


def client_numel(model: nn.Sequential, cut: int) -> int:
    """How many entries of the flat parameter vector the client part holds (they come first)."""
    return sum(p.numel() for p in client_part(model, cut).parameters())


def splittable(name: str, model: nn.Module) -> nn.Sequential:
    """The splittable form of zoo model ``name`` (the same parameters, grouped into blocks)."""
    if name in SPLIT_NATIVE:
        assert isinstance(model, nn.Sequential)
        return model
    if name not in BLOCKS:
        allowed = ", ".join([*BLOCKS, *SPLIT_NATIVE])
        raise ConfigError(f"model.name: {name!r} has no split points (splittable: {allowed})")
    return split_blocks(model, BLOCKS[name])

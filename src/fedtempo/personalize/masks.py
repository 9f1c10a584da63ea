"""Magnitude pruning of the global part, its upload size, and masked aggregation (SPEC E)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


def kept_count(numel: int, rho: float) -> int:
    """ceil((1 - rho) |u|): how many entries a device with pruning ratio rho keeps."""
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"pruning ratio must be in [0, 1], got {rho}")
    return min(numel, math.ceil((1.0 - rho) * numel - 1e-9))


def magnitude_mask(u: torch.Tensor, rho: float) -> torch.Tensor:
    """Boolean mask keeping the ceil((1 - rho)|u|) largest-magnitude entries of ``u``.
    Ties are broken by position (a stable sort), so the mask is deterministic."""
    k = kept_count(u.numel(), rho)
    order = torch.sort(u.abs(), descending=True, stable=True).indices
    mask = torch.zeros(u.numel(), dtype=torch.bool)
    mask[order[:k]] = True
    return mask


def upload_bytes(numel: int, kept: int, value_bytes: int = 4, index_bytes: int = 4) -> int:
    """Real size of a pruned upload: the kept values plus either a bitmap of ``numel`` bits or
    the kept entries' indices, whichever is smaller; an unpruned upload needs no mask."""
    if kept >= numel:
        return numel * value_bytes
    return kept * value_bytes + min(math.ceil(numel / 8), kept * index_bytes)


@dataclass(frozen=True)
class MaskedUpload:
    """A device's pruned global part: full-length vector (zeros where pruned), mask, weight."""

    values: torch.Tensor
    mask: torch.Tensor
    weight: float


def masked_average(current: torch.Tensor, uploads: Sequence[MaskedUpload]) -> torch.Tensor:
    """Per coordinate, the weighted mean over the devices that kept it; the old value where no
    device kept it. Accumulated in float64."""
    num = torch.zeros_like(current, dtype=torch.float64)
    den = torch.zeros_like(current, dtype=torch.float64)
    for up in uploads:
        m = up.mask.to(torch.float64)
        num += up.weight * m * up.values.to(torch.float64)
        den += up.weight * m
    out = current.to(torch.float64).clone()
    kept = den > 0
    out[kept] = num[kept] / den[kept]
    return out.to(current.dtype)


def personal_mask(model: nn.Module, personal: Sequence[str]) -> torch.Tensor:
    """Boolean mask over the flat parameter vector: True for parameters whose name starts with
    one of ``personal`` (layer names, e.g. '9' for the last layer of a Sequential)."""
    parts = []
    for name, p in model.named_parameters():
        is_personal = any(name == q or name.startswith(q + ".") for q in personal)
        parts.append(torch.full((p.numel(),), is_personal, dtype=torch.bool))
    mask = torch.cat(parts)
    unknown = [
        q
        for q in personal
        if not any(n == q or n.startswith(q + ".") for n, _ in model.named_parameters())
    ]
    if unknown:
        names = sorted({n.rsplit(".", 1)[0] for n, _ in model.named_parameters()})
        raise ValueError(f"personal layers {unknown} not in the model (layers: {names})")
    return mask


def last_layer(model: nn.Module) -> str:
    """Name of the module holding the model's last parameter (the default personal part)."""
    names = [n for n, _ in model.named_parameters()]
    if not names:
        raise ValueError("the model has no parameters")
    return names[-1].rsplit(".", 1)[0]

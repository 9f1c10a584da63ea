"""Local training with a global part (pruned, shared) and a personal part (kept on the device).

SPEC section E: the device keeps the ceil((1 - rho)|u|) largest-magnitude entries of the global
part u, trains its personal part v with u frozen, then the kept entries of u with v frozen, and
uploads the kept values and the mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fedtempo.client.local import LocalSpec, train_local
from fedtempo.personalize.masks import magnitude_mask


@dataclass(frozen=True)
class PersonalResult:
    vector: torch.Tensor  # the device's full model after training (pruned entries are 0)
    keep: torch.Tensor  # mask over the global entries (positions where ~personal) that were kept
    loss: float
    steps: int


def train_personalized(
    model: nn.Module,
    start: torch.Tensor,
    personal: torch.Tensor,
    rho: float,
    x: torch.Tensor,
    y: torch.Tensor,
    personal_spec: LocalSpec,
    global_spec: LocalSpec,
    generator: torch.Generator,
) -> PersonalResult:
    """``start`` holds the server's global part and the device's personal part (``personal``
    marks its entries). rho = 0 is exactly dense personalized training (no entry pruned)."""
    glob = ~personal
    keep = magnitude_mask(start[glob], rho)
    vec = start.clone()
    if rho > 0:
        g = vec[glob]
        g[~keep] = 0.0
        vec[glob] = g
    d1, s1, l1 = torch.zeros_like(vec), 0, 0.0
    if bool(personal.any()):  # no personal part (FedAvg): no personal phase
        d1, s1, l1 = train_local(model, vec, x, y, personal_spec, generator, trainable=personal)
    vec = vec + d1
    kept_global = glob.clone()
    kept_global[glob] = keep
    d2, s2, l2 = train_local(model, vec, x, y, global_spec, generator, trainable=kept_global)
    steps = s1 + s2
    loss = (l1 * s1 + l2 * s2) / steps if steps else float("nan")
    return PersonalResult(vec + d2, keep, loss, steps)

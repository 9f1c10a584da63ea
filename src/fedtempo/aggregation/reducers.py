"""Pure reducers over client updates (Flower-style `aggregate.py`: maths only, no state)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from fedtempo.client.local import Update
from fedtempo.params import weighted_mean, weighted_sum


def sample_weighted_delta(updates: Sequence[Update]) -> torch.Tensor:
    """FedAvg's mean delta, weighted by each update's number of samples (McMahan et al. 2017).

    Updates are reduced in increasing client id order, so the float result does not depend on
    arrival order.
    """
    total = float(sum(u.num_samples for u in updates))
    if not total > 0:
        return weighted_mean([u.delta for u in updates], [0.0] * len(updates))  # raises
    return coefficient_sum(updates, [float(u.num_samples) / total for u in updates])


def step_normalised_delta(updates: Sequence[Update]) -> torch.Tensor:
    """FedNova's mean delta for plain local SGD (Wang et al. 2020): tau_eff sum_i p_i Delta_i /
    tau_i, with p_i the sample shares, tau_i each update's local steps and tau_eff = sum_i p_i
    tau_i. FedAvg's mean weighs a device by its share times its steps, so updates of unequal
    lengths pull the model toward the longer ones' data (objective inconsistency); normalising
    each delta by its steps removes that bias and keeps the step length. Updates of equal
    lengths give FedAvg's mean, bit for bit (the same reduction)."""
    steps = {u.num_steps for u in updates}
    if len(steps) <= 1:
        return sample_weighted_delta(updates)
    if min(steps) < 1:
        raise ValueError(f"step_normalised_delta: an update with data reports {min(steps)} steps")
    total = float(sum(u.num_samples for u in updates))
    if not total > 0:
        return sample_weighted_delta(updates)  # raises, naming the problem
    ordered = [updates[i] for i in client_order(updates)]  # tau_eff's sum in a fixed order too
    share = [float(u.num_samples) / total for u in ordered]
    tau_eff = sum(p * u.num_steps for p, u in zip(share, ordered, strict=True))
    coefficients = [p * tau_eff / u.num_steps for p, u in zip(share, ordered, strict=True)]
    return coefficient_sum(ordered, coefficients)


def client_order(updates: Sequence[Update]) -> list[int]:
    """Indices of ``updates`` in (client id, base version) order: the reduction order of every
    reducer, so that float results never depend on arrival order."""
    return sorted(range(len(updates)), key=lambda i: (updates[i].client, updates[i].base_version))


def coefficient_sum(updates: Sequence[Update], coefficients: Sequence[float]) -> torch.Tensor:
    """sum_i c_i Delta_i, reduced in client order (float64 accumulation)."""
    order = client_order(updates)
    return weighted_sum([updates[i].delta for i in order], [coefficients[i] for i in order])


_CHUNK = 1 << 20  # coordinates per block: the sort's memory stays bounded for large models


def _by_coordinate(
    vectors: Sequence[torch.Tensor], reduce: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """``reduce`` applied to each coordinate's sorted values (n x block), block by block."""
    if not vectors:
        raise ValueError("a coordinate-wise rule needs at least one vector")
    size = vectors[0].numel()
    out = torch.empty(size, dtype=vectors[0].dtype)
    for lo in range(0, size, _CHUNK):
        hi = min(size, lo + _CHUNK)
        ordered = torch.stack([v.reshape(-1)[lo:hi] for v in vectors]).sort(dim=0).values
        out[lo:hi] = reduce(ordered)
    return out


def coordinate_median(vectors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The coordinate-wise median (Yin et al. 2018); the mean of the two middle values when the
    count is even. Unweighted, and independent of the order of ``vectors``."""
    n = len(vectors)
    return _by_coordinate(vectors, lambda s: (s[(n - 1) // 2] + s[n // 2]) / 2)


def trimmed_mean(vectors: Sequence[torch.Tensor], trim: float) -> torch.Tensor:
    """The coordinate-wise mean after dropping the floor(trim x n) smallest and largest values
    of every coordinate (Yin et al. 2018); trim in [0, 0.5)."""
    if not 0 <= trim < 0.5:
        raise ValueError(f"trim must be in [0, 0.5), got {trim}")
    cut = math.floor(trim * len(vectors))
    return _by_coordinate(vectors, lambda s: s[cut : len(vectors) - cut].mean(dim=0))

"""Pure reducers over client updates (Flower-style `aggregate.py`: maths only, no state)."""

from __future__ import annotations

from collections.abc import Sequence

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


def client_order(updates: Sequence[Update]) -> list[int]:
    """Indices of ``updates`` in (client id, base version) order: the reduction order of every
    reducer, so that float results never depend on arrival order."""
    return sorted(range(len(updates)), key=lambda i: (updates[i].client, updates[i].base_version))


def coefficient_sum(updates: Sequence[Update], coefficients: Sequence[float]) -> torch.Tensor:
    """sum_i c_i Delta_i, reduced in client order (float64 accumulation)."""
    order = client_order(updates)
    return weighted_sum([updates[i].delta for i in order], [coefficients[i] for i in order])

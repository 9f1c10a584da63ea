"""Pure reducers over client updates (Flower-style `aggregate.py`: maths only, no state)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedtempo.client.local import Update
from fedtempo.params import weighted_mean


def sample_weighted_delta(updates: Sequence[Update]) -> torch.Tensor:
    """FedAvg's mean delta, weighted by each update's number of samples (McMahan et al. 2017).

    Updates are reduced in increasing client id order, so the float result does not depend on
    arrival order.
    """
    ordered = sorted(updates, key=lambda u: (u.client, u.base_version))
    return weighted_mean([u.delta for u in ordered], [float(u.num_samples) for u in ordered])

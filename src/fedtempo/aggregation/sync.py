"""Synchronous rules: FedAvg and FedProx (FedProx = FedAvg server + proximal client term)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from fedtempo.aggregation.reducers import sample_weighted_delta
from fedtempo.client.local import Update


class SyncRule(Protocol):
    """A synchronous rule: the new global vector from the current one and a round's updates."""

    def aggregate(self, current: torch.Tensor, updates: Sequence[Update]) -> torch.Tensor: ...


@dataclass(frozen=True)
class FedAvg:
    """x <- x + server_lr * sum_i (n_i / n) Delta_i over the round's updates.

    With server_lr = 1 this is McMahan et al.'s FedAvg (the sample-weighted mean of the local
    models). FedProx (Li et al. 2020) uses the same server step; its proximal term lives in the
    client's LocalSpec.
    """

    server_lr: float = 1.0

    def aggregate(self, current: torch.Tensor, updates: Sequence[Update]) -> torch.Tensor:
        """New global vector from the round's updates; ``current`` unchanged if none carry data."""
        useful = [u for u in updates if u.num_samples > 0]
        if not useful:
            return current.clone()
        return current + self.server_lr * sample_weighted_delta(useful)

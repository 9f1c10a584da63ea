"""Synchronous rules: FedAvg and FedProx (FedProx = FedAvg server + proximal client term), and
the robust server steps (coordinate median, trimmed mean of the deltas).

Every rule can be applied two ways. ``aggregate`` reduces a round's updates at once (the
simulator). ``fuser`` / ``weight`` / ``step`` let a driver fuse them one at a time as they land
(the service's aggregator workers, SPEC C): ``step(current, fuser)`` after ``fuser.add(delta,
weight(samples))`` for every update. FedAvg's fuser is a float64 running sum, so the fused model
is a deterministic function of the updates *in the order they were added* and equals
``aggregate`` up to float rounding (``aggregate`` reduces in client order); the median and the
trimmed mean sort every coordinate, so both ways give the same bits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from fedtempo.aggregation.fusion import Buffered, RunningSum
from fedtempo.aggregation.reducers import coordinate_median, sample_weighted_delta, trimmed_mean
from fedtempo.client.local import Update

Fuser = RunningSum | Buffered


class SyncRule(Protocol):
    """A synchronous rule: the new global vector from the current one and a round's updates."""

    def aggregate(self, current: torch.Tensor, updates: Sequence[Update]) -> torch.Tensor: ...

    def fuser(self) -> Fuser:
        """An empty fuser for one round's deltas."""
        ...

    def weight(self, samples: int) -> float:
        """The weight an update over ``samples`` samples is fused with (0: left out)."""
        ...

    def step(self, current: torch.Tensor, fused: Fuser) -> torch.Tensor:
        """The new global vector from ``current`` and the round's fused deltas."""
        ...

    def describe(self) -> dict[str, Any]:
        """The rule as JSON data (``sync_rule_from`` reads it back)."""
        ...


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

    def fuser(self) -> Fuser:
        return RunningSum()

    def weight(self, samples: int) -> float:
        return float(samples)

    def step(self, current: torch.Tensor, fused: Fuser) -> torch.Tensor:
        if fused.count == 0:
            return current.clone()
        return current + self.server_lr * fused.result()

    def describe(self) -> dict[str, Any]:
        return {"rule": "mean", "server_lr": self.server_lr}


@dataclass(frozen=True)
class RobustStep:
    """x <- x + server_lr * reduce(Delta_1..Delta_k), ``reduce`` the coordinate-wise median or
    the trimmed mean (Yin et al. 2018) of the round's deltas (unweighted; updates without
    samples left out). Order-independent: fused one by one or at once, the same bits."""

    reducer: Literal["median", "trimmed_mean"] = "median"
    server_lr: float = 1.0
    trim: float = 0.1

    def __post_init__(self) -> None:
        if self.reducer not in ("median", "trimmed_mean"):
            raise ValueError(f"reducer must be 'median' or 'trimmed_mean', got {self.reducer!r}")
        if not 0 <= self.trim < 0.5:
            raise ValueError(f"trim must be in [0, 0.5), got {self.trim}")

    def aggregate(self, current: torch.Tensor, updates: Sequence[Update]) -> torch.Tensor:
        deltas = [u.delta for u in updates if u.num_samples > 0]
        if not deltas:
            return current.clone()
        if self.reducer == "median":
            return current + self.server_lr * coordinate_median(deltas)
        return current + self.server_lr * trimmed_mean(deltas, self.trim)

    def fuser(self) -> Fuser:
        return Buffered(self.reducer, self.trim)

    def weight(self, samples: int) -> float:
        return 1.0 if samples > 0 else 0.0

    def step(self, current: torch.Tensor, fused: Fuser) -> torch.Tensor:
        if fused.count == 0:
            return current.clone()
        return current + self.server_lr * fused.result()

    def describe(self) -> dict[str, Any]:
        return {"rule": self.reducer, "server_lr": self.server_lr, "trim": self.trim}


def sync_rule_from(data: Mapping[str, Any]) -> FedAvg | RobustStep:
    """The rule ``describe`` wrote (for a process that fuses on another rule's behalf)."""
    try:
        kind, lr = data["rule"], float(data["server_lr"])
        if kind == "mean":
            return FedAvg(lr)
        return RobustStep(kind, lr, float(data.get("trim", 0.1)))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a synchronous rule description: {dict(data)} ({exc})") from None

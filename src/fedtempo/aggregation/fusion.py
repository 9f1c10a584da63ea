"""Fusers: a job's fusion rule as an object that takes updates one at a time (the JIT
aggregation service, SPEC C, and any driver that fuses as updates land).

``RunningSum`` (FedAvg) is incremental: fusing updates one by one, in batches, or merging partial
sums gives the same model (up to float64 rounding), which is what lets JIT fuse what is queued,
then the stragglers, and lets a bounded queue be fused in parts. ``Buffered`` rules (coordinate
median, trimmed mean) need every update at once: the store keeps them all and nothing can be fused
before the last one lands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from fedtempo.aggregation.reducers import coordinate_median, trimmed_mean


@dataclass
class RunningSum:
    """sum_i w_i x_i and sum_i w_i, accumulated in float64."""

    incremental: ClassVar[bool] = True
    total: torch.Tensor | None = None
    weight: float = 0.0
    count: int = 0
    _dtype: torch.dtype = field(default=torch.float32, repr=False)

    def add(self, vector: torch.Tensor, weight: float) -> None:
        if weight <= 0:
            raise ValueError(f"update weight must be > 0, got {weight}")
        if self.total is None:
            self.total = torch.zeros(vector.numel(), dtype=torch.float64)
            self._dtype = vector.dtype
        elif vector.numel() != self.total.numel():
            raise ValueError(
                f"update has {vector.numel()} entries, the job's model {self.total.numel()}"
            )
        self.total.add_(vector.reshape(-1).to(torch.float64), alpha=weight)
        self.weight += weight
        self.count += 1

    def merge(self, other: RunningSum) -> None:
        """Fold another partial sum into this one."""
        if other.total is None:
            return
        if self.total is None:
            self.total, self._dtype = other.total.clone(), other._dtype
        else:
            self.total.add_(other.total)
        self.weight += other.weight
        self.count += other.count

    def result(self) -> torch.Tensor:
        """The weighted mean, in the updates' dtype."""
        if self.total is None or self.weight <= 0:
            raise ValueError("nothing fused yet")
        return (self.total / self.weight).to(self._dtype)


@dataclass
class Buffered:
    """A rule that needs all updates: the coordinate-wise median, or the mean after trimming the
    ``trim`` share of the values at each end of every coordinate. Weights are checked but not
    used (both rules are unweighted)."""

    incremental: ClassVar[bool] = False
    rule: Literal["median", "trimmed_mean"] = "median"
    trim: float = 0.1
    updates: list[torch.Tensor] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.rule not in ("median", "trimmed_mean"):
            raise ValueError(f"unknown buffered rule {self.rule!r}")
        if not 0 <= self.trim < 0.5:
            raise ValueError(f"trim must be in [0, 0.5), got {self.trim}")

    @property
    def count(self) -> int:
        return len(self.updates)

    def add(self, vector: torch.Tensor, weight: float) -> None:
        if weight <= 0:
            raise ValueError(f"update weight must be > 0, got {weight}")
        if self.updates and vector.numel() != self.updates[0].numel():
            raise ValueError(
                f"update has {vector.numel()} entries, the job's model {self.updates[0].numel()}"
            )
        self.updates.append(vector.reshape(-1))

    def merge(self, other: Buffered) -> None:
        """Join another buffer (the updates themselves; nothing is fused)."""
        for u in other.updates:
            self.add(u, 1.0)

    def result(self) -> torch.Tensor:
        if not self.updates:
            raise ValueError("nothing fused yet")
        if self.rule == "median":
            return coordinate_median(self.updates)
        return trimmed_mean(self.updates, self.trim)

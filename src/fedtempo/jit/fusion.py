"""FedAvg fusion as a running weighted sum: fusing updates one by one, in batches, or merging
partial sums gives the same model (up to float64 rounding), which is what lets JIT fuse what is
queued, then the stragglers, and lets a bounded queue be fused in parts."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class RunningSum:
    """sum_i w_i x_i and sum_i w_i, accumulated in float64."""

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

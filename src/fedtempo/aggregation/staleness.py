"""How staleness weighs an update: pure functions of the update's staleness.

``versions`` = t - tau (global versions applied since the client's start model);
``distance`` = gamma = ||x_t - x_{t-tau}|| / ||Delta|| (AsyncFedED's Euclidean staleness).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Protocol


@dataclass(frozen=True)
class Staleness:
    versions: int
    distance: float


class StalenessWeight(Protocol):
    """The weight of an update given its staleness (versions behind, and for AsyncFedED the
    Euclidean gamma). Contract: pure, finite and >= 0. ``needs_distance``: whether it reads
    ``s.distance`` (gamma = ||x_t - x_tau|| / ||Delta||), which obliges the server to keep the
    start versions and to reject an update whose delta has zero norm."""

    needs_distance: ClassVar[bool]

    def __call__(self, s: Staleness) -> float: ...


@dataclass(frozen=True)
class Constant:
    """s = 1 (FedAsync-constant; FedBuff without staleness weighting)."""

    needs_distance: ClassVar[bool] = False

    def __call__(self, s: Staleness) -> float:
        return 1.0


@dataclass(frozen=True)
class Polynomial:
    """s = (t - tau + 1)^(-a) (Xie et al. 2019)."""

    needs_distance: ClassVar[bool] = False

    a: float = 0.5

    def __call__(self, s: Staleness) -> float:
        return float((s.versions + 1) ** (-self.a))


@dataclass(frozen=True)
class Hinge:
    """s = 1 if t - tau <= b else 1 / (a (t - tau - b) + 1) (Xie et al. 2019)."""

    needs_distance: ClassVar[bool] = False

    a: float = 10.0
    b: float = 6.0

    def __call__(self, s: Staleness) -> float:
        if s.versions <= self.b:
            return 1.0
        return 1.0 / (self.a * (s.versions - self.b) + 1.0)


@dataclass(frozen=True)
class InverseSqrt:
    """s = 1 / sqrt(1 + t - tau) (FedBuff's optional staleness scaling, Nguyen et al. 2022)."""

    needs_distance: ClassVar[bool] = False

    def __call__(self, s: Staleness) -> float:
        return 1.0 / math.sqrt(1.0 + s.versions)


@dataclass(frozen=True)
class Euclidean:
    """eta = lambda / (gamma + epsilon) (AsyncFedED, Wang et al. 2022)."""

    needs_distance: ClassVar[bool] = True

    lam: float = 1.0
    epsilon: float = 1.0

    def __post_init__(self) -> None:
        if not self.epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {self.epsilon}")

    def __call__(self, s: Staleness) -> float:
        return self.lam / (s.distance + self.epsilon)

"""When to deploy an aggregator, and for which job first (SPEC section C).

Arrival prediction [design]: per party, the round duration d = arrival - broadcast; the first
round uses a profile (compute and transfer times), later rounds an exponentially weighted mean
and variance, d_hat = mu + k sqrt(v). The round's quorum is predicted at the q-th smallest
predicted arrival. Trigger: t_trig = A_hat - t_dep - t_fuse(pending) - margin. Least laxity first:
laxity = A_hat - now - t_dep - t_fuse(pending); ties by more pending work, then job id.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class ArrivalPredictor:
    """Per-party EWMA of round durations. ``profile[p]``: party p's duration before any
    observation; ``alpha``: EWMA weight of a new observation; ``safety_sd``: standard
    deviations of safety added to the mean."""

    profile: np.ndarray
    alpha: float = 0.3
    safety_sd: float = 1.0
    mean: np.ndarray = field(init=False)
    var: np.ndarray = field(init=False)
    seen: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")
        self.mean = np.asarray(self.profile, dtype=np.float64).copy()
        self.var = np.zeros(len(self.mean))
        self.seen = np.zeros(len(self.mean), dtype=bool)

    def observe(self, party: int, duration: float) -> None:
        if not self.seen[party]:
            self.mean[party], self.var[party], self.seen[party] = duration, 0.0, True
            return
        diff = duration - self.mean[party]
        self.mean[party] += self.alpha * diff
        self.var[party] = (1 - self.alpha) * (self.var[party] + self.alpha * diff * diff)

    def durations(self) -> np.ndarray:
        """d_hat per party."""
        return np.asarray(self.mean + self.safety_sd * np.sqrt(self.var))


def predicted_quorum(arrivals: np.ndarray, quorum: int) -> float:
    """A_hat: the quorum-th smallest predicted arrival time (inf if fewer are finite)."""
    if quorum < 1:
        raise ValueError(f"quorum must be >= 1, got {quorum}")
    if quorum > len(arrivals):
        return math.inf
    return float(np.partition(np.asarray(arrivals, dtype=np.float64), quorum - 1)[quorum - 1])


def trigger_time(a_hat: float, deploy_s: float, fuse_s: float, margin_s: float) -> float:
    """When to ask for an aggregator so that it is up and has fused the queue at A_hat."""
    return a_hat - deploy_s - fuse_s - margin_s


def laxity(a_hat: float, now: float, deploy_s: float, fuse_s: float) -> float:
    """Slack before a job's aggregator must start deploying to be on time."""
    return a_hat - now - deploy_s - fuse_s


@dataclass(frozen=True)
class Waiting:
    """A job waiting for an aggregator."""

    job: int
    laxity: float
    pending: int
    weight: float = 1.0


def least_laxity_first(jobs: Sequence[Waiting]) -> list[int]:
    """Job ids in serving order: least laxity (divided by the job's weight when positive)
    first, ties by more pending updates, then by job id."""

    def key(w: Waiting) -> tuple[float, int, int]:
        lax = w.laxity / w.weight if w.laxity > 0 else w.laxity * w.weight
        return (lax, -w.pending, w.job)

    return [w.job for w in sorted(jobs, key=key)]

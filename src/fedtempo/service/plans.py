"""What the aggregation manager keeps per job: the worker a job holds, and what it has learnt
of the job's arrivals (``service.aggregation``)."""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass, field

import numpy as np

from fedtempo.jit.policy import ArrivalPredictor
from fedtempo.service.workers import Worker


@dataclass
class Held:
    """A worker held by a job (deploying while ``worker`` is None)."""

    job: str
    asked: float
    worker: Worker | None = None
    wid: int = 0  # its number in the ledger's ``workers`` table, once it is up
    round: int | None = None
    fed_seq: int = 0  # the last update seq fused by this worker in its round
    release: bool = False  # JIT's grace ran out: hand back and exit
    partial_only: bool = False  # started for the queue bound: fold the queue, hand back, exit
    task: asyncio.Task[None] | None = None


@dataclass
class JobPlan:
    """What the manager knows of one job between rounds."""

    predictor: ArrivalPredictor = field(
        default_factory=lambda: ArrivalPredictor(np.full(0, math.inf))
    )
    wanted_since: float | None = None
    fallback_round: int | None = None  # the round JIT gave up on (arrival-driven now)
    a_hat: dict[int, float] = field(default_factory=dict)  # round -> predicted close
    observed_round: int | None = None
    failures: int = 0  # workers lost in a row (a store that cannot be read, say) ...
    retry_at: float = -math.inf  # ... so the next one waits until then (capped backoff)

    def lost_worker(self, now: float) -> None:
        self.failures += 1
        self.retry_at = now + min(0.5 * 2 ** (self.failures - 1), 60.0)


async def wait(event: asyncio.Event, timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)


def grow(predictor: ArrivalPredictor, n: int) -> None:
    """Make room for parties up to ``n`` (unknown ones: no prediction)."""
    extra = n - len(predictor.mean)
    if extra > 0:
        predictor.mean = np.concatenate([predictor.mean, np.full(extra, math.inf)])
        predictor.var = np.concatenate([predictor.var, np.zeros(extra)])
        predictor.seen = np.concatenate([predictor.seen, np.zeros(extra, dtype=bool)])


def durations(predictor: ArrivalPredictor, n: int) -> np.ndarray:
    grow(predictor, n)
    return predictor.durations()

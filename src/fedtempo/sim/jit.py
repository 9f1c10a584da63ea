"""A multi-job aggregation service on the virtual clock: eager, lazy and JIT aggregators drawn
from a pool of C workers (SPEC section C).

Each job runs rounds: the server broadcasts at t0, every party's update lands in the store (which
needs no aggregator) at its arrival time, and the round closes when ``quorum`` updates have been
fused and the model published; later arrivals of that round are dropped. Policies:

- eager: one aggregator per job, deployed at the job's start and held to its end; it fuses every
  update as it arrives.
- lazy: deploy when the quorum is in the store, fuse the queue, publish, release.
- jit: deploy at t_trig = A_hat - t_dep - t_fuse(q) - margin (or as soon as the store holds the
  quorum, if that is earlier), fuse what is queued, then each straggler as it comes, publish,
  release. Past A_hat + grace without a quorum the aggregator is released and the round goes
  arrival-driven (lazy). Durations are learnt from when a party could start (its availability),
  since the prediction adds the wait for availability itself.

Waiting for the pool: SimPy's PriorityResource, FIFO for eager and lazy; for JIT by the latest
start time A_hat - t_dep - t_fuse, which orders jobs exactly as least laxity first (every job's
laxity falls at the same rate, so the order never changes while they wait); ties by request time.
A fusion of k updates takes ``k * fuse_s``; folding in a partial sum kept in the store costs one
update's fusion.

Fusion rules (``Job.fusion``): "sum" (FedAvg running sums) can be fused in parts, so eager and JIT
fold each update as it lands and a JIT aggregator that gives up hands its partial sum back to the
store. "buffer" rules (median, trimmed mean) need every update at once: the fusion of all q
updates starts only when the quorum is in, JIT triggers at A_hat - t_dep - margin, and the store
holds all q updates.

Queue bound (``JitSettings.queue_bound``, sum rules only): when that many unfused updates wait in
the store with no aggregator up, a worker is deployed at once to fold them into a partial sum kept
in the store, then released. It bounds the store's memory at the price of extra deploys. A buffer
rule cannot honour a bound: its store peak is the quorum whatever the bound (``store_peak``).
Same-instant events follow SimPy order; jobs start in id order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import simpy

from fedtempo.jit.policy import ArrivalPredictor, predicted_quorum, trigger_time

# (job, party, round, broadcast time) -> the time the party's update lands (inf: never).
ArrivalFn = Callable[[int, int, int, float], float]
# (job, party, time) -> when the party can next start work (the time itself if available then).
ReadyFn = Callable[[int, int, float], float]
Policy = Literal["eager", "lazy", "jit"]
Fusion = Literal["sum", "buffer"]


@dataclass(frozen=True)
class Job:
    """One FL job: parties 0..parties-1, rounds, quorum, aggregator costs for its model size,
    and each party's profiled round duration (the first round's prediction)."""

    job: int
    parties: int
    rounds: int
    quorum: int
    deploy_s: float
    fuse_s: float  # per update
    profile_s: np.ndarray
    fusion: Fusion = "sum"

    def __post_init__(self) -> None:
        if not 1 <= self.quorum <= self.parties:
            raise ValueError(f"job {self.job}: quorum {self.quorum} not in [1, {self.parties}]")
        if self.deploy_s < 0 or self.fuse_s < 0:
            raise ValueError(f"job {self.job}: deploy and fusion times must be >= 0")
        if self.fusion not in ("sum", "buffer"):
            raise ValueError(
                f"job {self.job}: fusion must be 'sum' or 'buffer', got {self.fusion!r}"
            )
        if len(self.profile_s) != self.parties:
            raise ValueError(
                f"job {self.job}: profile has {len(self.profile_s)} entries, parties {self.parties}"
            )


@dataclass
class JobMetrics:
    """What one job measured. ``aggregator_s``: container-seconds held (deploy included)."""

    aggregator_s: float = 0.0
    latency: list[float] = field(default_factory=list)  # publish - quorum-completing arrival
    round_s: list[float] = field(default_factory=list)
    prediction_error: list[float] = field(default_factory=list)  # A_hat - actual quorum time
    fallbacks: int = 0  # JIT rounds that went arrival-driven
    partial_fusions: int = 0  # aggregators deployed because the queue reached its bound
    store_peak: int = 0  # most unfused updates the store held at once
    completed_rounds: int = 0
    finish: float = math.nan


@dataclass(frozen=True)
class JitSettings:
    safety_sd: float = 1.0  # standard deviations of safety in d_hat
    alpha: float = 0.3  # EWMA weight
    margin_s: float = 0.0
    grace_s: float = 60.0
    queue_bound: int | None = None  # fuse the store's queue in parts past this many updates

    def __post_init__(self) -> None:
        if self.queue_bound is not None and self.queue_bound < 1:
            raise ValueError(f"queue_bound must be >= 1, got {self.queue_bound}")


class AggregationService:
    """Runs every job under one policy with a pool of ``pool`` aggregators."""

    def __init__(
        self,
        env: simpy.Environment,
        jobs: Sequence[Job],
        arrival: ArrivalFn,
        *,
        policy: Policy,
        pool: int,
        ready: ReadyFn | None = None,
        settings: JitSettings = JitSettings(),
    ) -> None:
        if pool < 1:
            raise ValueError(f"aggregator pool must hold >= 1 worker, got {pool}")
        self.env, self.jobs, self.arrival = env, list(jobs), arrival
        self.policy, self.settings = policy, settings
        self.ready = ready if ready is not None else (lambda job, party, t: t)
        self.pool = simpy.PriorityResource(env, capacity=pool)
        self.metrics = {j.job: JobMetrics() for j in self.jobs}
        self._granted: dict[int, float] = {}  # job -> when its aggregator was granted

    def start(self) -> list[simpy.Process]:
        return [self.env.process(self._job(j)) for j in self.jobs]

    def _hold(self, job: Job, priority: float) -> Generator[Any, Any, Any]:
        """Acquire an aggregator and deploy it; returns the pool request."""
        req = self.pool.request(priority=round(priority * 1e6))  # integer microseconds
        yield req
        self._granted[job.job] = self.env.now
        yield self.env.timeout(job.deploy_s)
        return req

    def _release(self, job: Job, req: Any) -> None:
        self.pool.release(req)
        self.metrics[job.job].aggregator_s += self.env.now - self._granted.pop(job.job)

    def close(self) -> None:
        """Count the aggregators still held at the end of the simulation up to now."""
        for job, granted in self._granted.items():
            self.metrics[job].aggregator_s += self.env.now - granted
        self._granted.clear()

    def _job(self, job: Job) -> Generator[Any, Any, None]:
        m, env = self.metrics[job.job], self.env
        predictor = ArrivalPredictor(job.profile_s, self.settings.alpha, self.settings.safety_sd)
        held = None
        if self.policy == "eager":
            held = yield from self._hold(job, env.now)
        for r in range(job.rounds):
            t0 = env.now
            arrivals = np.array([self.arrival(job.job, p, r, t0) for p in range(job.parties)])
            order = np.argsort(arrivals, kind="stable")[: job.quorum]
            quorum_at = float(arrivals[order[-1]])
            if self.policy == "eager":
                publish = yield from self._eager_round(job, arrivals[order], m)
            elif self.policy == "lazy":
                publish = yield from self._lazy_round(job, arrivals[order], 0, m)
            else:
                publish = yield from self._jit_round(job, predictor, t0, arrivals[order], m)
            if not math.isfinite(publish):
                break  # the quorum never arrives: the job stops (eager still holds its worker)
            m.latency.append(publish - quorum_at)
            m.round_s.append(publish - t0)
            m.completed_rounds += 1
            for p in range(job.parties):
                if arrivals[p] <= publish:
                    # the work's duration, from when the party could start (not the wait for it)
                    predictor.observe(p, float(arrivals[p] - self.ready(job.job, p, t0)))
        if held is not None:
            self._release(job, held)
        m.finish = env.now

    def _eager_round(
        self, job: Job, arrivals: np.ndarray, m: JobMetrics
    ) -> Generator[Any, Any, float]:
        if not np.isfinite(arrivals[-1]):
            yield self.env.event()  # waits for an update that never comes, holding the worker
        if job.fusion == "sum":  # fused one by one as they land
            done = _fold(self.env.now, arrivals, job.fuse_s)
            m.store_peak = max(m.store_peak, 1)
        else:
            done = max(self.env.now, float(arrivals[-1])) + len(arrivals) * job.fuse_s
            m.store_peak = max(m.store_peak, len(arrivals))
        yield self.env.timeout(done - self.env.now)
        return done

    def _fuse_early(
        self, job: Job, arrivals: np.ndarray, fused: int, until: float, m: JobMetrics
    ) -> Generator[Any, Any, int]:
        """Fold the queue into the store's partial sum each time it reaches the bound before
        ``until`` (when the round's own aggregator comes). Returns how many are fused."""
        bound, env = self.settings.queue_bound, self.env
        if bound is None or job.fusion != "sum":
            return fused
        while fused + bound <= len(arrivals) and arrivals[fused + bound - 1] < until:
            yield env.timeout(max(0.0, float(arrivals[fused + bound - 1]) - env.now))
            req = yield from self._hold(job, env.now)
            queued = int(np.sum(arrivals <= env.now)) - fused
            m.store_peak = max(m.store_peak, queued)
            yield env.timeout(_queue_fusion_s(job, queued, fused))
            self._release(job, req)
            fused += queued
            m.partial_fusions += 1
        return fused

    def _lazy_round(
        self, job: Job, arrivals: np.ndarray, fused: int, m: JobMetrics
    ) -> Generator[Any, Any, float]:
        """Arrival-driven: deploy when the quorum is in the store; ``fused`` of the updates are
        already in the store's partial sum."""
        quorum_at = float(arrivals[-1])
        if not math.isfinite(quorum_at):
            return math.inf  # no quorum, no aggregator
        fused = yield from self._fuse_early(job, arrivals, fused, quorum_at, m)
        yield self.env.timeout(max(0.0, quorum_at - self.env.now))
        req = yield from self._hold(job, self.env.now)
        queued = len(arrivals) - fused
        m.store_peak = max(m.store_peak, queued)
        yield self.env.timeout(_queue_fusion_s(job, queued, fused))
        self._release(job, req)
        return self.env.now

    def _jit_round(
        self,
        job: Job,
        predictor: ArrivalPredictor,
        t0: float,
        arrivals: np.ndarray,
        m: JobMetrics,
    ) -> Generator[Any, Any, float]:
        env, s = self.env, self.settings
        d_hat = predictor.durations()
        predicted = np.array([self.ready(job.job, p, t0) + d_hat[p] for p in range(job.parties)])
        a_hat = predicted_quorum(predicted, job.quorum)
        quorum_at = float(arrivals[-1])
        if not math.isfinite(a_hat):  # no prediction (parties never ready): arrival-driven
            m.fallbacks += 1
            return (yield from self._lazy_round(job, arrivals, 0, m))
        if math.isfinite(quorum_at):
            m.prediction_error.append(a_hat - quorum_at)
        ahead = job.quorum * job.fuse_s if job.fusion == "sum" else 0.0  # fusable before A_hat
        start = trigger_time(a_hat, job.deploy_s, ahead, s.margin_s)
        # The store counts arrivals: a quorum complete before the trigger deploys at once.
        until = min(start, quorum_at)
        fused = yield from self._fuse_early(job, arrivals, 0, until, m)
        yield env.timeout(max(0.0, until - env.now))
        req = yield from self._hold(job, start + s.margin_s)
        queued = int(np.sum(arrivals <= env.now)) - fused
        queue_done = env.now + _queue_fusion_s(job, queued, fused)
        m.store_peak = max(m.store_peak, queued if job.fusion == "sum" else job.quorum)
        give_up = a_hat + s.grace_s
        if quorum_at > max(give_up, env.now):  # no quorum by the grace: release, go lazy
            yield env.timeout(max(0.0, give_up - env.now))
            self._release(job, req)
            m.fallbacks += 1
            if job.fusion == "sum":  # what it fused by then stays in the store's partial sum
                fused += _fused_by(env.now, queue_done, arrivals[fused:], queued, job.fuse_s)
            return (yield from self._lazy_round(job, arrivals, fused, m))
        if job.fusion == "sum":  # the queue (and partial sum), then stragglers as they land
            done = _fold(queue_done, arrivals[fused + queued :], job.fuse_s)
        else:
            done = max(env.now, quorum_at) + job.quorum * job.fuse_s
        yield env.timeout(done - env.now)
        self._release(job, req)
        return done


def _queue_fusion_s(job: Job, queued: int, fused: int) -> float:
    """Seconds to fuse ``queued`` waiting updates plus, when ``fused`` > 0, the store's partial
    sum (which costs one update's fusion to fold in)."""
    return (queued + (fused > 0)) * job.fuse_s


def _fold(start: float, arrivals: np.ndarray, fuse_s: float) -> float:
    """When one aggregator, free from ``start``, has fused each arrival in turn."""
    done = start
    for a in arrivals:
        done = max(done, float(a)) + fuse_s
    return done


def _fused_by(t: float, free_at: float, arrivals: np.ndarray, queued: int, fuse_s: float) -> int:
    """How many of ``arrivals`` an aggregator has folded in by ``t``, when the first ``queued``
    of them (with any partial sum) are fused by ``free_at`` and the rest one by one as they land.
    Conservative: an update counts only once its fusion has ended."""
    if free_at > t:
        return 0
    count, done = queued, free_at
    for a in arrivals[queued:]:
        done = max(done, float(a)) + fuse_s
        if done > t:
            break
        count += 1
    return count

"""Who fuses which round, and when: eager, lazy and JIT aggregator workers on the wall clock
(SPEC C), from a pool of at most ``workers`` at once, for every job of the service. This
module runs the rounds jobs; an asynchronous job's worker applies its pending uploads in
arrival order (``service.asyncserve``), under the same policies, pool and accounting.

The policies are the simulator's (``fedtempo.sim.jit``), same ``fedtempo.jit`` objects:
- eager: a worker per job, started when the job is seen and held until it ends; it fuses
  every update as it lands and publishes each round.
- lazy: a worker is started when a round closes, fuses the queue, publishes, exits.
- jit: per party, its round duration (upload time minus round start) is learnt
  (``ArrivalPredictor``); the round's close is predicted at the q-th smallest predicted
  arrival, A_hat, and a worker is asked for at A_hat - t_dep - q t_fuse - margin, or at once
  when the round closes earlier. It fuses the queue, then each straggler as it lands. Past
  A_hat + grace with the round still open, it hands its running sum back to the store and
  exits; the round is then arrival-driven. When more jobs want a worker than are free, the
  least laxity goes first (``least_laxity_first``); eager and lazy serve first come first.
- ``queue_bound`` (sum rules, lazy and jit): when that many unfused updates wait with no worker
  up, one is started to fold them into the store's partial sum, and exits.

t_dep (start until ready) and t_fuse (seconds per fused update) are measured from this
service's own workers (EWMA), from a first guess until the first worker reports. A worker that
dies is replaced: the next one starts from the round's stored partial sum (a prefix of the
updates in arrival order) and fuses the rest, so that the model is the same bits; which policy
runs changes when a model is computed, never the model.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from fedtempo.jit.policy import (
    ArrivalPredictor,
    Waiting,
    laxity,
    least_laxity_first,
    predicted_quorum,
    trigger_time,
)
from fedtempo.service import asyncserve
from fedtempo.service.accounting import Accounting
from fedtempo.service.asyncjob import AsyncJob, Pending
from fedtempo.service.jobs import Job, Rejected
from fedtempo.service.plans import Held, JobPlan, durations, grow, wait
from fedtempo.service.rounds import OpenRound, RoundsJob
from fedtempo.service.store import StoreError
from fedtempo.service.workers import Launcher, Worker, WorkerDied, WorkerError

log = logging.getLogger("fedtempo.service.aggregation")
Policy = Literal["eager", "lazy", "jit"]
POLICIES: tuple[Policy, ...] = ("eager", "lazy", "jit")


@dataclass(frozen=True)
class AggregationSettings:
    """The service's aggregation: ``policy``, at most ``workers`` at once; JIT's ``margin_s``
    and ``grace_s`` (wall seconds), its EWMA weight and safety; ``queue_bound`` (see above);
    the deploy and per-update fusion guesses used until the first measurement;
    ``answer_wait_s``: how long an asynchronous upload waits for a worker to apply it (then a
    503 asks the party to retry the same key; one no worker had begun is dropped, blob and
    all, and one a worker had begun is committed, so the retry gets its answer)."""

    policy: Policy = "jit"
    workers: int = 2
    margin_s: float = 0.25
    grace_s: float = 30.0
    alpha: float = 0.3
    safety_sd: float = 1.0
    queue_bound: int | None = None
    deploy_guess_s: float = 2.0
    fuse_guess_s: float = 0.01
    answer_wait_s: float = 30.0

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(
                f"aggregation must be one of {', '.join(POLICIES)}, got {self.policy!r}"
            )
        if self.workers < 1:
            raise ValueError(f"the worker pool must hold at least 1 worker, got {self.workers}")
        if self.queue_bound is not None and self.queue_bound < 1:
            raise ValueError(f"queue_bound must be >= 1, got {self.queue_bound}")


class Aggregation:
    """The worker pool and the policy, driven by the service's ticker and uploads."""

    def __init__(
        self,
        settings: AggregationSettings,
        launcher: Launcher,
        jobs: Callable[[], dict[str, Job]],
        clock: Callable[[], float],
        changed: Callable[[str], None],
        accounting: Accounting,
    ) -> None:
        self.s, self.launcher, self.jobs, self.clock = settings, launcher, jobs, clock
        self.changed, self.acct = changed, accounting
        self.held: dict[str, Held] = {}
        self.pending: dict[str, list[Pending]] = {}  # asynchronous uploads, in arrival order
        self.plans: dict[str, JobPlan] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self.deploy_s = settings.deploy_guess_s
        self.fuse_s = settings.fuse_guess_s
        self._measured = {"deploy": False, "fuse": False}

    # ---- signals ----------------------------------------------------------------------------

    def notify(self, job_id: str) -> None:
        """An update landed (or the round changed): wake the job's worker."""
        event = self._wake.get(job_id)
        if event is not None:
            event.set()

    def waiting(self, job_id: str) -> bool:
        """Whether uploads of asynchronous job ``job_id`` wait for its worker."""
        return any(not p.cancelled for p in self.pending.get(job_id, ()))

    async def submit(self, job: AsyncJob, p: Pending) -> dict[str, Any]:
        """Queue a validated asynchronous upload for the job's worker; its answer once the
        worker applied it and it is committed. Past ``answer_wait_s`` without a worker to take
        it, a 503: the party retries the same key (an upload the worker had begun is
        committed, and the retry gets its answer)."""
        self.pending.setdefault(job.id, []).append(p)
        if job.id in self.held:
            self.notify(job.id)
        else:
            self.step()  # a free worker is granted now, not at the next tick
        try:
            return await asyncio.wait_for(asyncio.shield(p.done), self.s.answer_wait_s)
        except TimeoutError:
            if not p.started:
                p.cancelled = True
                p.done.cancel()
                job.store.delete_blobs({p.sha})
            else:  # it will be committed (or fail) with no one awaiting it here
                p.done.add_done_callback(lambda f: f.cancelled() or f.exception())
            raise Rejected(
                503, "no aggregator worker could apply the update in time; retry the same key"
            ) from None

    def _measure(self, kind: str, value: float) -> None:
        old = self.deploy_s if kind == "deploy" else self.fuse_s
        new = value if not self._measured[kind] else old + self.s.alpha * (value - old)
        self._measured[kind] = True
        if kind == "deploy":
            self.deploy_s = new
        else:
            self.fuse_s = new

    # ---- the policy ------------------------------------------------------------------------

    def _plan(self, job_id: str) -> JobPlan:
        if job_id not in self.plans:
            self.plans[job_id] = JobPlan(
                ArrivalPredictor(np.full(0, math.inf), self.s.alpha, self.s.safety_sd)
            )
        return self.plans[job_id]

    def _close_count(self, job: RoundsJob, r: OpenRound) -> int:
        return min(job.s.quorum, len(r.cohort)) if job.s.close_at_quorum else len(r.cohort)

    def predicted_close(self, job: RoundsJob, r: OpenRound) -> float:
        """A_hat of the open round (inf without a prediction for enough of its cohort)."""
        plan = self._plan(job.id)
        d_hat = durations(plan.predictor, max(r.cohort) + 1)
        arrivals = np.array([r.got[p][1] if p in r.got else r.started + d_hat[p] for p in r.cohort])
        a_hat = predicted_quorum(arrivals, self._close_count(job, r))
        plan.a_hat.setdefault(r.number, a_hat)
        return a_hat

    def _unfused(self, job: RoundsJob, r: OpenRound) -> int:
        return len(job.pending(r.partial_seq))

    def _wants(self, job: RoundsJob, now: float) -> tuple[bool, bool, float]:
        """(wants a worker, only for the queue bound, its laxity)."""
        r, plan = job.open, self._plan(job.id)
        if job.status != "running":  # done, or stopped by the admin: nothing more to publish
            return False, False, math.inf
        if self.s.policy == "eager":
            return True, False, -math.inf
        if r is None:
            return False, False, math.inf
        if r.closing is not None:
            return True, False, -math.inf
        bound = self.s.queue_bound
        if bound is not None and _incremental(job) and self._unfused(job, r) >= bound:
            return True, True, -math.inf
        if self.s.policy == "lazy" or plan.fallback_round == r.number:
            return False, False, math.inf
        a_hat = self.predicted_close(job, r)
        if not math.isfinite(a_hat):
            return False, False, math.inf
        q = self._close_count(job, r)
        ahead = q * self.fuse_s if _incremental(job) else 0.0  # fusable before A_hat
        if now < trigger_time(a_hat, self.deploy_s, ahead, self.s.margin_s):
            return False, False, math.inf
        return True, False, laxity(a_hat, now, self.deploy_s, ahead)

    def step(self) -> None:
        """Called by the ticker: observe closed rounds, release what JIT gives up, grant free
        workers in serving order."""
        now = self.clock()
        for job_id, job in self._rounds_jobs():
            self._observe(job)
            held, plan, r = self.held.get(job_id), self._plan(job_id), job.open
            if (
                held is not None
                and self.s.policy == "jit"
                and r is not None
                and r.closing is None
                and held.round == r.number
                and not held.partial_only
                and not held.release
                and now > plan.a_hat.get(r.number, math.inf) + self.s.grace_s
            ):
                held.release = True
                plan.fallback_round = r.number
                self.acct.fallback(job_id)
                self.notify(job_id)
        free = self.s.workers - len(self.held)
        if free > 0:
            for job_id, partial_only in self._serving_order(now)[:free]:
                self._grant(job_id, partial_only, now)

    def queue(self, now: float) -> list[str]:
        """The jobs waiting for a worker, in the order they will get one."""
        return [job_id for job_id, _ in self._serving_order(now)]

    def _rounds_jobs(self) -> list[tuple[str, RoundsJob]]:
        return [
            (job_id, job)
            for job_id, job in self.jobs().items()
            if isinstance(job, RoundsJob) and job.bp.rule is not None
        ]

    def _served_jobs(self) -> list[tuple[str, Job]]:
        """Every job an aggregator worker serves: rounds jobs with a fusable rule, and every
        asynchronous job."""
        return [
            (job_id, job)
            for job_id, job in self.jobs().items()
            if isinstance(job, AsyncJob) or (isinstance(job, RoundsJob) and job.bp.rule)
        ]

    def _serving_order(self, now: float) -> list[tuple[str, bool]]:
        """(job, only for the queue bound) of every job that wants a worker and holds none:
        least laxity first under JIT, first come first served otherwise."""
        waiting: list[tuple[str, Waiting, bool]] = []
        for job_id, job in self._served_jobs():
            plan = self._plan(job_id)
            if job_id in self.held or now < plan.retry_at:
                continue
            if isinstance(job, AsyncJob):
                want, partial_only, lax = asyncserve.wants(self, job, now)
                pending = len(self.pending.get(job_id, ()))
            else:
                assert isinstance(job, RoundsJob)
                want, partial_only, lax = self._wants(job, now)
                pending = self._unfused(job, job.open) if job.open is not None else 0
            if not want:
                plan.wanted_since = None
                continue
            if plan.wanted_since is None:
                plan.wanted_since = now
            order = lax if self.s.policy == "jit" else plan.wanted_since
            waiting.append((job_id, Waiting(len(waiting), order, pending), partial_only))
        ranked = least_laxity_first([w for _, w, _ in waiting])
        return [(waiting[i][0], waiting[i][2]) for i in ranked]

    def _grant(self, job_id: str, partial_only: bool, now: float) -> None:
        held = Held(job_id, now, partial_only=partial_only)
        self.held[job_id] = held
        self._plan(job_id).wanted_since = None
        held.task = asyncio.get_running_loop().create_task(self._run(held))

    def _observe(self, job: RoundsJob) -> None:
        """Learn the durations of the last closed round's parties (once per round)."""
        plan = self._plan(job.id)
        last = job.last_closed
        if last is None or plan.observed_round == last.number:
            return
        plan.observed_round = last.number
        grow(plan.predictor, max(last.cohort) + 1)
        for party, (_, t) in sorted(last.got.items()):
            plan.predictor.observe(party, t - last.started)
        a_hat = plan.a_hat.pop(last.number, math.nan)
        if last.closing is not None and math.isfinite(a_hat):
            self.acct.prediction(job.id, a_hat - last.closing)

    # ---- a held worker ----------------------------------------------------------------------

    async def _run(self, held: Held) -> None:
        job = self.jobs().get(held.job)
        wid: int | None = None
        outcome = "done"
        try:
            worker = await self.launcher.spawn()
            held.worker = worker
            self._measure("deploy", worker.ready - worker.spawned)
            wid = held.wid = self.acct.started(held.job, self.s.policy, worker)
            if isinstance(job, AsyncJob):
                await asyncserve.serve(self, held, job, worker)
            else:
                assert isinstance(job, RoundsJob)
                await self._serve(held, job, worker)
            await worker.stop()
        except (WorkerDied, WorkerError, OSError) as exc:
            outcome = f"died: {exc}"
            log.warning("job %s: aggregator worker lost (%s); it will be replaced", held.job, exc)
            if held.worker is not None and hasattr(held.worker, "kill"):
                held.worker.kill()
        except Exception as exc:  # a store error, say: the worker goes, the job stays
            outcome = f"failed: {exc}"
            log.warning("job %s: aggregation failed: %s", held.job, exc)
            if held.worker is not None:
                await held.worker.stop()
        finally:
            if outcome == "done":
                self._plan(held.job).failures = 0
            else:
                self._plan(held.job).lost_worker(self.clock())
            self.held.pop(held.job, None)
            self._wake.pop(held.job, None)
            if held.worker is not None and wid is not None:
                try:
                    self.acct.exited(wid, held.worker, time.time(), outcome)
                except (StoreError, sqlite3.Error) as exc:  # a full disk: the next start does
                    log.warning("job %s: worker exit not recorded: %s", held.job, exc)

    async def _serve(self, held: Held, job: RoundsJob, worker: Worker) -> None:
        event = self._wake.setdefault(job.id, asyncio.Event())
        rule = job.bp.rule
        assert rule is not None
        while True:
            event.clear()
            r = job.open
            if r is None:
                if self.s.policy != "eager" or job.status != "running":
                    return
                await wait(event, 1.0)
                continue
            if held.round != r.number:
                await worker.call(
                    {
                        "op": "begin",
                        "layout": job.bp.layout.to_json(),
                        "rule": rule.describe(),
                        "partial": r.partial,
                    }
                )
                held.round, held.fed_seq = r.number, r.partial_seq
            for row in job.pending(held.fed_seq):
                weight = rule.weight(int(row["samples"]))
                if weight > 0:
                    answer = await worker.call({"op": "add", "sha": row["sha"], "weight": weight})
                    self._measure("fuse", float(answer.get("fuse_s", self.fuse_s)))
                    self.acct.fused(job.id, held.wid)
                held.fed_seq = int(row["seq"])
            if job.open is not r:
                continue  # the round changed while we fused (a deadline failure)
            if r.closing is not None and not job.pending(held.fed_seq):
                base = job.version_sha(job.current_version())
                answer = await worker.call({"op": "finish", "base": base})
                if job.open is r and job.status == "running":
                    job.publish_round(r.number, str(answer["sha"]), self.clock())
                    self.changed(job.id)
                held.round = None
                if self.s.policy != "eager":
                    return
                continue
            if held.release or held.partial_only:
                if held.fed_seq > r.partial_seq and _incremental(job):
                    answer = await worker.call({"op": "checkpoint"})
                    job.record_partial(r.number, str(answer["sha"]), held.fed_seq)
                    self.acct.partial(job.id)
                return
            await wait(event, 1.0)

    async def shutdown(self) -> None:
        for held in list(self.held.values()):
            if held.task is not None:
                held.task.cancel()
        for held in list(self.held.values()):
            if held.worker is not None:
                await held.worker.stop()


def _incremental(job: RoundsJob) -> bool:
    """Whether the job's rule fuses in parts (a running sum) rather than all at once."""
    return job.bp.rule is not None and bool(job.bp.rule.fuser().incremental)

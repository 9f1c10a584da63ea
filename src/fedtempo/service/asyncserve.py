"""An asynchronous job's aggregator worker: when it wants one, and what the worker does.

Every pending upload wants a worker at once. Beyond that, per policy: eager holds one for the
job's life; lazy only while uploads wait; JIT learns each party's training time (upload minus
task issue, ``ArrivalPredictor``), predicts the next arrival A among the open tasks and asks
for a worker at A - t_dep - t_fuse - margin, keeps it while an arrival is that close, and gives
it up past A + grace (arrival-driven until the late party uploads).
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING

import numpy as np

from fedtempo.jit.policy import laxity, trigger_time
from fedtempo.service.asyncjob import AsyncJob, Pending
from fedtempo.service.jobs import Rejected
from fedtempo.service.plans import Held, durations, grow, wait
from fedtempo.service.workers import Worker

if TYPE_CHECKING:
    from fedtempo.service.aggregation import Aggregation


def next_arrival(agg: Aggregation, job: AsyncJob) -> float:
    """The earliest predicted upload among the job's training parties (inf: none predicted)."""
    tasks = job.store.db.execute(
        "SELECT party, issued FROM tasks WHERE job=? AND open=1", (job.id,)
    ).fetchall()
    if not tasks:
        return math.inf
    plan = agg._plan(job.id)
    d_hat = durations(plan.predictor, max(int(t["party"]) for t in tasks) + 1)
    return float(np.min([float(t["issued"]) + d_hat[int(t["party"])] for t in tasks]))


def wants(agg: Aggregation, job: AsyncJob, now: float) -> tuple[bool, bool, float]:
    """(wants a worker, only for the queue bound (never here), its laxity)."""
    if agg.waiting(job.id):
        return True, False, -math.inf
    if job.status != "running" or agg.s.policy == "lazy":
        return False, False, math.inf
    if agg.s.policy == "eager":
        return True, False, -math.inf
    a = next_arrival(agg, job)
    if not math.isfinite(a) or now > a + agg.s.grace_s:
        return False, False, math.inf
    if now < trigger_time(a, agg.deploy_s, agg.fuse_s, agg.s.margin_s):
        return False, False, math.inf
    return True, False, laxity(a, now, agg.deploy_s, agg.fuse_s)


BATCH = 64  # pending uploads one worker command (and one commit) takes at most


async def serve(agg: Aggregation, held: Held, job: AsyncJob, worker: Worker) -> None:
    """Apply the job's pending uploads in arrival order, while the policy wants the worker.
    Whatever waits when the worker is free goes as one batch: one command, one commit (group
    commit: under load the fsync and the round trip are shared; alone, a batch of one)."""
    event = agg._wake.setdefault(job.id, asyncio.Event())
    await worker.call(
        {"op": "begin_async", "layout": job.bp.layout.to_json(), "algorithm": job.alg.describe()}
    )
    queue = agg.pending.setdefault(job.id, [])
    while True:
        event.clear()
        while queue:
            batch = _batch(job, queue)
            if batch:
                await _apply(agg, held, job, worker, batch)
            for p in batch:  # only once done: a worker lost mid-way leaves them for the next
                queue.remove(p)
        if not wants(agg, job, agg.clock())[0]:
            return
        await wait(event, 1.0)


def _batch(job: AsyncJob, queue: list[Pending]) -> list[Pending]:
    """The next updates to apply, in arrival order: those the party was told to retry
    dropped, those already answered or no longer valid resolved at once, at most one per
    party (a second one, a retry or a late one, waits for the next batch to be checked)."""
    batch: list[Pending] = []
    for p in list(queue):
        if len(batch) == BATCH:
            break
        if p.cancelled:
            queue.remove(p)
            continue
        if any(b.party == p.party for b in batch):
            continue
        try:
            prior = job.recheck(p)
        except Rejected as exc:
            _resolve(p, exc)
            queue.remove(p)
            continue
        if prior is not None:
            _resolve(p, prior)
            queue.remove(p)
            continue
        batch.append(p)
    return batch


async def _apply(
    agg: Aggregation, held: Held, job: AsyncJob, worker: Worker, batch: list[Pending]
) -> None:
    for p in batch:
        p.started = True
    answer = await worker.call(job.command(batch))  # WorkerDied: the batch stays queued
    results = answer["results"]
    agg._measure("fuse", float(answer.get("fuse_s", agg.fuse_s)) / len(batch))
    issued, now = [job.issued(p) for p in batch], agg.clock()
    try:
        answers = job.settle(batch, results, now)
    except Rejected as exc:
        for p in batch:
            _resolve(p, exc)
        return
    plan = agg._plan(job.id)
    for p, t, a in zip(batch, issued, answers, strict=True):
        if a is None:
            _resolve(p, Rejected(409, f"job {job.id} is {job.status}"))
            continue
        if t is not None:
            grow(plan.predictor, p.party + 1)
            plan.predictor.observe(p.party, p.received - t)
        agg.acct.fused(job.id, held.wid)
        agg.acct.applied(job.id, now - p.received)
        _resolve(p, a)
    agg.changed(job.id)


def _resolve(p: Pending, outcome: dict[str, object] | Rejected) -> None:
    if p.done.done():
        return
    if isinstance(outcome, Rejected):
        p.done.set_exception(outcome)
    else:
        p.done.set_result(outcome)

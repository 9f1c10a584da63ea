"""Aggregator workers (SPEC C): separate processes fuse every rounds job's updates with the job's
rule; the policy (eager, lazy, JIT) changes when a model is computed, never the model."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fedtempo.aggregation.sync import RobustStep
from fedtempo.client.local import Update
from fedtempo.experiment.deploy import blueprint
from fedtempo.jit.policy import ArrivalPredictor
from fedtempo.service import wire
from fedtempo.service.aggregation import AggregationSettings, JobPlan
from fedtempo.service.party import Party, PartyStats, WorkTask
from fedtempo.service.workers import ProcessLauncher, ProcessWorker
from tests.service.helpers import InProcess, tiny_spec

SAMPLES = [5, 9, 13]


def _delta(round_no: int, party: int) -> torch.Tensor:
    return torch.randn(15, generator=torch.Generator().manual_seed(100 * round_no + party))


def _spec(rounds: int, reducer: str = "mean", parties: int = 3) -> dict[str, Any]:
    server = {"algorithm": "fedavg", "rounds": rounds, "clients_per_round": parties}
    return tiny_spec({**server, "reducer": reducer}, gather_s=60.0, deadline_s=120.0)


def _parties(svc: InProcess, job: str, rounds: int, n: int = 3) -> list[Party]:
    deltas = {f"r{r}-p{i}": _delta(r, i) for r in range(rounds) for i in range(n)}
    return [svc.party(svc.enroll(job, f"p{i}"), deltas, SAMPLES[i]) for i in range(n)]


def _tasks(parties: list[Party]) -> list[WorkTask]:
    first = [p.ask() for p in parties]
    tasks = [p.ask() if t is None else t for p, t in zip(parties, first, strict=True)]
    assert all(isinstance(t, WorkTask) for t in tasks), tasks
    return tasks  # type: ignore[return-value]


def _model(svc: InProcess, job: str) -> torch.Tensor:
    r = svc.client.get(f"/v1/jobs/{job}/model", headers=svc.admin())
    return wire.parse(svc.service.jobs[job].bp.layout, r.content)[0]


def _direct(spec: dict[str, Any], orders: list[list[int]]) -> torch.Tensor:
    """The job's rule fused here, round by round, in the given arrival orders."""
    bp = blueprint(spec)
    rule, model = bp.rule, bp.initial.clone()
    assert rule is not None
    for r, order in enumerate(orders):
        fused = rule.fuser()
        for i in order:
            fused.add(_delta(r, i), rule.weight(SAMPLES[i]))
        model = rule.step(model, fused)
    return model


def _run_rounds(svc: InProcess, job: str, orders: list[list[int]]) -> None:
    parties = _parties(svc, job, len(orders))
    for r, order in enumerate(orders):
        tasks = _tasks(parties)
        for i in order:
            parties[i].step(tasks[i], PartyStats())
        svc.wait_version(job, r + 1)


def test_the_median_fused_by_a_worker_equals_the_rule_applied_at_once(tmp_path: Path) -> None:
    """Here with cold workers (a fresh interpreter each); the other tests use forked ones."""
    svc = InProcess(
        tmp_path / "s",
        aggregation=AggregationSettings("lazy", workers=1),
        launcher=ProcessLauncher(tmp_path / "s" / "blobs"),
    )
    spec = _spec(1, "median")
    job = svc.create(spec)
    _run_rounds(svc, job, [[2, 0, 1]])
    bp = blueprint(spec)
    assert isinstance(bp.rule, RobustStep)
    updates = [Update(i, 0, 0, _delta(0, i), SAMPLES[i], 1, 0.5) for i in range(3)]
    assert torch.equal(_model(svc, job), bp.rule.aggregate(bp.initial, updates))
    assert torch.equal(_model(svc, job), _direct(spec, [[2, 0, 1]]))
    svc.close()


@pytest.mark.slow
def test_the_policy_changes_when_models_are_computed_never_the_models(tmp_path: Path) -> None:
    orders = [[1, 2, 0], [0, 2, 1]]
    spec = _spec(2)
    models, workers = {}, {}
    for policy in ("eager", "lazy", "jit"):
        svc = InProcess(tmp_path / policy, aggregation=AggregationSettings(policy, workers=2))
        job = svc.create(spec)
        _run_rounds(svc, job, orders)
        models[policy] = _model(svc, job)
        svc.wait_idle(job)
        workers[policy] = svc.service.accounting.workers(job)
        svc.close()
    assert torch.equal(models["eager"], models["lazy"])
    assert torch.equal(models["eager"], models["jit"])
    assert torch.equal(models["eager"], _direct(spec, orders))
    assert len(workers["eager"]) == 1  # one worker held for the job's life
    assert len(workers["lazy"]) == 2  # one per round, started at its close
    assert all(w["exited"] is not None and w["outcome"] == "done" for w in workers["lazy"])


def test_a_worker_killed_mid_fusion_is_replaced_and_the_model_is_unchanged(tmp_path: Path) -> None:
    svc = InProcess(tmp_path / "s", aggregation=AggregationSettings("eager", workers=1))
    spec = _spec(1)
    job = svc.create(spec)
    parties = _parties(svc, job, 1)
    tasks = _tasks(parties)
    parties[1].step(tasks[1], PartyStats())
    agg, end = svc.service.aggregation, time.monotonic() + 60
    while svc.service.accounting.counts[job]["fused"] < 1:  # the worker has fused one update
        assert time.monotonic() < end
        time.sleep(0.02)
    worker = agg.held[job].worker
    assert worker is not None and worker.pid is not None
    os.kill(worker.pid, signal.SIGKILL)  # mid-round: one update fused, two to come
    for i in (0, 2):
        parties[i].step(tasks[i], PartyStats())
    svc.wait_version(job, 1)
    assert torch.equal(_model(svc, job), _direct(spec, [[1, 0, 2]]))
    svc.wait_idle(job)  # the job is done: its eager worker exits
    lives = svc.service.accounting.workers(job)
    assert len(lives) == 2 and lives[0]["outcome"].startswith("died")
    assert lives[1]["outcome"] == "done"
    svc.close()


def test_jit_releases_the_worker_of_a_round_whose_party_never_comes(tmp_path: Path) -> None:
    settings = AggregationSettings("jit", workers=2, grace_s=0.5, margin_s=0.0)
    svc = InProcess(tmp_path / "s", aggregation=settings)
    spec = _spec(2, parties=2)
    job = svc.create(spec)
    parties = _parties(svc, job, 2, n=2)
    tasks = _tasks(parties)
    for i in (0, 1):  # round 0: both quick, no prediction yet (arrival-driven)
        parties[i].step(tasks[i], PartyStats())
    svc.wait_version(job, 1)
    tasks = _tasks(parties)
    parties[0].step(tasks[0], PartyStats())  # round 1: p1 goes silent
    agg, acct, end = svc.service.aggregation, svc.service.accounting, time.monotonic() + 60
    while not (acct.counts[job]["fallbacks"] == 1 and job not in agg.held):
        assert time.monotonic() < end, acct.job(job)
        time.sleep(0.05)
    lives = acct.workers(job)
    assert len(lives) == 2 and all(w["exited"] is not None for w in lives)
    row = svc.service.store.db.execute(
        "SELECT partial, partial_seq FROM rounds WHERE job=? AND number=1", (job,)
    ).fetchone()
    assert row["partial"] is not None  # its running sum went back to the store
    assert acct.counts[job]["partial_fusions"] == 1
    parties[1].step(tasks[1], PartyStats())  # it comes back after all: arrival-driven
    svc.wait_version(job, 2)
    assert torch.equal(_model(svc, job), _direct(spec, [[0, 1], [0, 1]]))
    svc.close()


class Blocking:
    """A launcher whose workers never become ready (the pool's order is all that is looked at)."""

    name = "blocking"

    async def spawn(self) -> ProcessWorker:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


def test_least_laxity_first_under_a_pool_of_one(tmp_path: Path) -> None:
    clock = Clock()
    settings = AggregationSettings("jit", workers=1, margin_s=0.0)
    svc = InProcess(tmp_path / "s", clock, aggregation=settings, launcher=Blocking())  # type: ignore[arg-type]
    agg = svc.service.aggregation
    durations = {"a": 20.0, "b": 5.0, "c": 12.0}
    jobs = {}
    for name, d in durations.items():
        job = svc.create(_spec(1, parties=2))
        _tasks(_parties(svc, job, 1, n=2))  # the round opens at clock.t
        agg.plans[job] = JobPlan(ArrivalPredictor(np.array([d, d]), safety_sd=0.0))
        jobs[name] = job
    clock.t += 19.0  # every trigger has passed; laxity a: -1 - t_dep, b: -14 - t_dep, c: -7 - t_dep
    end = time.monotonic() + 10
    while not agg.held:
        assert time.monotonic() < end
        time.sleep(0.05)
    assert list(agg.held) == [jobs["b"]]  # the least laxity got the only worker
    assert agg.queue(clock.t) == [jobs["c"], jobs["a"]]
    svc.close()


def test_a_round_closed_before_a_restart_is_fused_after_it_with_the_same_model(
    tmp_path: Path,
) -> None:
    """The server stops with a round closed and no worker up (none could start): after the
    restart, a worker fuses the stored updates and publishes the model the rule gives."""
    spec = _spec(1)
    svc = InProcess(
        tmp_path / "s",
        aggregation=AggregationSettings("lazy", workers=1),
        launcher=Blocking(),  # type: ignore[arg-type]
    )
    job = svc.create(spec)
    parties = _parties(svc, job, 1)
    tasks = _tasks(parties)
    for i in (2, 1, 0):
        parties[i].step(tasks[i], PartyStats())
    assert svc.status(job)["round"]["closing"] and svc.status(job)["version"] == 0
    token = svc.token
    svc.close()
    again = InProcess(tmp_path / "s", token=token, aggregation=AggregationSettings("lazy"))
    again.wait_version(job, 1)
    assert torch.equal(_model(again, job), _direct(spec, [[2, 1, 0]]))
    assert again.status(job)["status"] == "done"
    again.close()


def test_past_the_queue_bound_the_queue_is_folded_into_the_stores_partial_sum(
    tmp_path: Path,
) -> None:
    settings = AggregationSettings("lazy", workers=1, queue_bound=2)
    svc = InProcess(tmp_path / "s", aggregation=settings)
    spec = _spec(1)
    job = svc.create(spec)
    parties = _parties(svc, job, 1)
    tasks = _tasks(parties)
    for i in (1, 2):
        parties[i].step(tasks[i], PartyStats())
    acct, end = svc.service.accounting, time.monotonic() + 60
    while acct.counts[job]["partial_fusions"] < 1 or job in svc.service.aggregation.held:
        assert time.monotonic() < end, acct.job(job)
        time.sleep(0.05)
    row = svc.service.store.db.execute(
        "SELECT partial, partial_seq FROM rounds WHERE job=? AND number=0", (job,)
    ).fetchone()
    assert row["partial"] is not None and row["partial_seq"] == 2
    assert svc.status(job)["version"] == 0  # folded, not published: the round is still open
    parties[0].step(tasks[0], PartyStats())
    svc.wait_version(job, 1)
    assert torch.equal(_model(svc, job), _direct(spec, [[1, 2, 0]]))
    svc.wait_idle(job)
    assert [w["fused"] for w in acct.workers(job)] == [2, 1]  # the second resumed the partial
    svc.close()

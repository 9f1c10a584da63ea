"""Asynchronous jobs through aggregator workers: the server stores and queues an upload, a worker
process applies it with the job's ``AsyncAlgorithm``, the answer comes once that is committed.
Which policy runs, and whether a worker dies on the way, changes when an update is applied,
never the model."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch

from fedtempo.algorithms.asynchronous import AsyncAlgorithm, async_algorithm_from
from fedtempo.client.local import Update
from fedtempo.experiment.deploy import blueprint
from fedtempo.experiment.drivers import async_rule
from fedtempo.experiment.servers import FedAsyncServer, FedBuffServer
from fedtempo.service.aggregation import AggregationSettings
from fedtempo.service.party import PartyStats, WorkTask
from tests.service.helpers import InProcess, tiny_spec
from tests.service.test_equivalence import FEDBUFF, SAMPLES, SEEDS, _async_script, _delta, _direct
from tests.service.test_equivalence import _model as model_of

FEDASYNC = {
    "algorithm": "fedasync",
    "concurrency": 3,
    "max_updates": 100,
    "fedasync": {"staleness": "polynomial"},
}


def test_every_asynchronous_rule_survives_its_description() -> None:
    """What the server sends a worker is the algorithm itself, parameters and all."""
    servers: list[dict[str, Any]] = [
        FEDBUFF,
        FEDASYNC,
        {**FEDASYNC, "fedasync": {"staleness": "hinge", "hinge_a": 3.0}},
        {"algorithm": "asyncfeded", "max_updates": 9, "asyncfeded": {"k_init": 2, "lam": 0.5}},
    ]
    for server in servers:
        algorithm = blueprint(tiny_spec(server)).asynchronous
        assert algorithm is not None
        assert async_algorithm_from(algorithm.describe()) == algorithm


def test_the_policy_changes_when_async_updates_are_applied_never_the_models(
    tmp_path: Path,
) -> None:
    rule = async_rule(FedBuffServer.model_validate(FEDBUFF))
    want, _ = _direct(AsyncAlgorithm(rule), blueprint(tiny_spec(FEDBUFF)).initial, SEEDS)
    lives = {}
    for policy in ("eager", "lazy", "jit"):
        svc = InProcess(tmp_path / policy, aggregation=AggregationSettings(policy, workers=1))
        job = svc.create(tiny_spec(FEDBUFF))
        answers = _async_script(svc, job, SEEDS)
        assert [a["status"] for a in answers] == ["buffered", "applied", "buffered", "applied"]
        assert torch.equal(model_of(svc, job), want.params)
        lives[policy] = svc.service.accounting.workers(job)
        assert sum(w["fused"] for w in lives[policy] if w["exited"]) <= 4
        assert svc.service.accounting.counts[job]["fused"] == 4  # every update, in a worker
        svc.close()
    assert len(lives["eager"]) == 1  # held for the job's life
    assert len(lives["lazy"]) == 4  # one per queued update: nothing predicted, nothing kept


def test_an_async_worker_killed_is_replaced_and_the_model_is_unchanged(tmp_path: Path) -> None:
    svc = InProcess(tmp_path / "s", aggregation=AggregationSettings("eager", workers=1))
    job = svc.create(tiny_spec(FEDASYNC))
    deltas = {f"a{d}-p{i}": _delta(10 * d + i) for d in range(2) for i in range(2)}
    parties = [svc.party(svc.enroll(job, f"p{i}"), deltas, SAMPLES[i]) for i in range(2)]
    tasks = [p.ask() for p in parties]
    stats = PartyStats()
    assert isinstance(tasks[0], WorkTask) and isinstance(tasks[1], WorkTask)
    parties[0].step(tasks[0], stats)
    worker = svc.service.aggregation.held[job].worker
    assert worker is not None and worker.pid is not None
    os.kill(worker.pid, signal.SIGKILL)  # the next update's command meets a dead worker
    parties[1].step(tasks[1], stats)
    assert [a["status"] for a in stats.answers] == ["applied", "applied"]
    algorithm = AsyncAlgorithm(async_rule(FedAsyncServer.model_validate(FEDASYNC)))
    st = algorithm.init(blueprint(tiny_spec(FEDASYNC)).initial.clone())
    for i in range(2):
        assert algorithm.start(st, i, 0).base_version == 0
    for i in range(2):
        algorithm.receive(st, Update(i, 0, 0, deltas[f"a0-p{i}"], SAMPLES[i], 1, 0.5))
    assert torch.equal(model_of(svc, job), st.params)
    lives = svc.service.accounting.workers(job)
    assert len(lives) == 2 and lives[0]["outcome"].startswith("died")
    svc.close()


def test_an_upload_no_worker_can_take_is_refused_503_and_applied_on_retry(tmp_path: Path) -> None:
    """A pool of one held by an eager rounds job: the asynchronous upload waits for a worker,
    then is answered 503 (retry the same key) with nothing stored; once the worker is free the
    party's retry is applied and answered, the update counted once."""
    svc = InProcess(
        tmp_path / "s", aggregation=AggregationSettings("eager", workers=1, answer_wait_s=0.3)
    )
    rounds = svc.create(tiny_spec({"algorithm": "fedavg", "rounds": 5}))
    end = time.monotonic() + 30
    while rounds not in svc.service.aggregation.held:  # eager: it holds the only worker
        assert time.monotonic() < end
        time.sleep(0.02)
    job = svc.create(tiny_spec(FEDASYNC))
    party = svc.party(svc.enroll(job, "p0"), {"a0-p0": _delta(1)}, 5)
    task = party.ask()
    assert isinstance(task, WorkTask)
    stats = PartyStats()
    thread = threading.Thread(target=party.step, args=(task, stats))
    thread.start()
    end = time.monotonic() + 30
    while party.http.retries < 2:  # answered 503 at least twice: queued, no worker
        assert time.monotonic() < end
        time.sleep(0.02)
    db = svc.service.store.db
    assert db.execute("SELECT COUNT(*) FROM updates WHERE job=?", (job,)).fetchone()[0] == 0
    r = svc.client.post(f"/v1/jobs/{rounds}/stop", headers=svc.admin())
    assert r.status_code == 200, r.text
    thread.join(30)
    assert [a["status"] for a in stats.answers] == ["applied"]
    status = svc.status(job)
    assert status["version"] == 1 and status["updates"]["accepted"] == 1
    blobs = {p.name for p in (tmp_path / "s" / "blobs").glob("*/*")}
    assert blobs == svc.service.store.referenced_blobs()  # the refused tries left nothing
    svc.close()

"""The service is a driver of the same algorithm objects: scripted parties in a fixed arrival
order give bit-identical models to the algorithm applied directly (DESIGN: no second copy)."""

from __future__ import annotations

from pathlib import Path

import torch

from fedtempo.aggregation.sync import FedAvg
from fedtempo.algorithms.asynchronous import AdaptiveEpochs, AsyncAlgorithm
from fedtempo.client.local import Update
from fedtempo.experiment.deploy import blueprint
from fedtempo.experiment.drivers import async_rule
from fedtempo.experiment.servers import AsyncFedEDServer, FedBuffServer
from fedtempo.service import wire
from fedtempo.service.party import PartyStats, WorkTask
from tests.service.helpers import InProcess, tiny_spec

SAMPLES = [5, 9, 13]


def _delta(seed: int) -> torch.Tensor:
    return torch.randn(15, generator=torch.Generator().manual_seed(seed))


def _model(svc: InProcess, job: str) -> torch.Tensor:
    r = svc.client.get(f"/v1/jobs/{job}/model", headers=svc.admin())
    assert r.status_code == 200
    layout = svc.service.jobs[job].bp.layout
    return wire.parse(layout, r.content)[0]


def test_a_fedavg_round_equals_the_rule_fused_in_arrival_order(tmp_path: Path) -> None:
    """An aggregator worker fuses the round with FedAvg's own fuser, in arrival order: the same
    bits as that fuser applied here, and FedAvg's client-order reduction up to float rounding."""
    svc = InProcess(tmp_path / "state")
    spec = tiny_spec({"algorithm": "fedavg", "rounds": 2, "clients_per_round": 3}, gather_s=60.0)
    job = svc.create(spec)
    deltas = {f"r0-p{i}": _delta(i) for i in range(3)}
    parties = [svc.party(svc.enroll(job, f"p{i}"), deltas, SAMPLES[i]) for i in range(3)]
    assert parties[0].ask() is None and parties[1].ask() is None  # waiting for the cohort
    tasks: list[WorkTask] = []
    order = [2, 0, 1]
    for i in order:
        t = parties[i].ask()
        assert isinstance(t, WorkTask) and t.round == 0 and t.base_version == 0
        tasks.append(t)
    for i, t in zip(order, tasks, strict=True):
        parties[i].step(t, PartyStats())
    status = svc.wait_version(job, 1)
    bp = blueprint(spec)
    rule = bp.rule
    assert isinstance(rule, FedAvg)
    fused = rule.fuser()
    for i in order:
        fused.add(deltas[f"r0-p{i}"], rule.weight(SAMPLES[i]))
    assert torch.equal(_model(svc, job), rule.step(bp.initial, fused))
    updates = [Update(i, 0, 0, deltas[f"r0-p{i}"], SAMPLES[i], 1, 0.5) for i in range(3)]
    assert torch.allclose(_model(svc, job), rule.aggregate(bp.initial, updates), atol=1e-6)
    assert status["version"] == 1 and status["rounds_done"] == 1
    assert status["updates"]["accepted"] == 3 and status["versions_kept"] == [1]
    svc.close()


def _async_script(svc: InProcess, job: str, seeds: dict[str, int]) -> list[dict[str, object]]:
    """p0, p1, p2 start at v0 and upload in that order, each getting its next task with the
    answer (as the simulator redispatches at once); then p0 uploads its second training."""
    deltas = {k: _delta(v) for k, v in seeds.items()}
    parties = [svc.party(svc.enroll(job, f"p{i}"), deltas, SAMPLES[i]) for i in range(3)]
    first = [p.ask() for p in parties]
    stats = PartyStats()
    for i in (0, 1, 2):
        task = first[i]
        assert isinstance(task, WorkTask) and task.base_version == 0
        parties[i].step(task, stats)
        assert stats.answers[-1]["next"]["task"] == f"a1-p{i}"  # type: ignore[index]
    again = parties[0].ask()  # the task that came with its first answer
    assert isinstance(again, WorkTask) and again.task == "a1-p0"
    parties[0].step(again, stats)
    return stats.answers


def _direct(algorithm: AsyncAlgorithm, initial: torch.Tensor, seeds: dict[str, int]):  # type: ignore[no-untyped-def]
    st = algorithm.init(initial.clone(), range(3))
    jobs = {f"a0-p{i}": algorithm.start(st, i, 0) for i in range(3)}
    ks = []

    def receive(key: str, client: int) -> None:
        j = jobs[key]
        u = Update(client, 0, j.base_version, _delta(seeds[key]), SAMPLES[client], 1, 0.5)
        ks.append(algorithm.receive(st, u)[1])
        algorithm.finish(st, j.base_version)
        jobs[f"a{j.dispatch + 1}-p{client}"] = algorithm.start(st, client, j.dispatch + 1)

    for i in range(3):
        receive(f"a0-p{i}", i)
    receive("a1-p0", 0)
    return st, ks


FEDBUFF = {
    "algorithm": "fedbuff",
    "concurrency": 3,
    "max_updates": 100,
    "fedbuff": {"buffer_size": 2, "staleness_weight": True},
}
SEEDS = {"a0-p0": 10, "a0-p1": 11, "a0-p2": 12, "a1-p0": 13}


def test_fedbuff_in_the_service_equals_the_rule_applied_directly(tmp_path: Path) -> None:
    svc = InProcess(tmp_path / "state")
    server = FEDBUFF
    job = svc.create(tiny_spec(server))
    answers = _async_script(svc, job, SEEDS)
    assert [a["status"] for a in answers] == ["buffered", "applied", "buffered", "applied"]
    assert [a["staleness"] for a in answers] == [0, 0, 1, 1]
    algorithm = AsyncAlgorithm(async_rule(FedBuffServer.model_validate(server)))
    st, _ = _direct(algorithm, blueprint(tiny_spec(server)).initial, SEEDS)
    assert st.version == 2 and torch.equal(_model(svc, job), st.params)
    svc.close()


def test_asyncfeded_in_the_service_equals_the_rule_and_returns_its_k(tmp_path: Path) -> None:
    svc = InProcess(tmp_path / "state")
    server = {
        "algorithm": "asyncfeded",
        "concurrency": 3,
        "max_updates": 100,
        "asyncfeded": {"k_init": 3, "kappa": 1.0, "gamma_bar": 1.0},
    }
    job = svc.create(tiny_spec(server))
    answers = _async_script(svc, job, SEEDS)
    e = AsyncFedEDServer.model_validate(server).asyncfeded
    algorithm = AsyncAlgorithm(
        async_rule(AsyncFedEDServer.model_validate(server)),
        0,
        AdaptiveEpochs(e.kappa, e.gamma_bar, e.k_init, e.k_max),
    )
    st, ks = _direct(algorithm, blueprint(tiny_spec(server)).initial, SEEDS)
    assert [a["next_epochs"] for a in answers] == ks
    assert len(set(ks)) > 1  # the stale update turned K down
    assert st.version == 4 and torch.equal(_model(svc, job), st.params)
    # the ledger holds the whole state: a restarted service serves the same model and Ks
    svc.close()
    again = InProcess(tmp_path / "state", token=svc.token)
    assert torch.equal(_model(again, job), st.params)
    rows = again.service.store.db.execute(
        "SELECT id, next_epochs FROM parties WHERE job=? ORDER BY id", (job,)
    ).fetchall()
    assert {int(r[0]): int(r[1]) for r in rows} == st.local_epochs
    again.close()


def test_two_jobs_in_one_service_stay_apart(tmp_path: Path) -> None:
    svc = InProcess(tmp_path / "state")
    server = FEDBUFF
    specs = {
        size: tiny_spec({**server, "fedbuff": {"buffer_size": size, "staleness_weight": True}})
        for size in (2, 1)
    }
    a, b = svc.create(specs[2]), svc.create(specs[1])
    other = {k: v + 100 for k, v in SEEDS.items()}
    _async_script(svc, a, SEEDS)
    _async_script(svc, b, other)  # same party names, another job
    for job, seeds, size in ((a, SEEDS, 2), (b, other, 1)):
        spec = specs[size]
        rule = async_rule(FedBuffServer.model_validate(spec["server"]))
        st, _ = _direct(AsyncAlgorithm(rule), blueprint(spec).initial, seeds)
        assert torch.equal(_model(svc, job), st.params)
    status = svc.client.get("/v1/jobs", headers=svc.admin()).json()["jobs"]
    assert [j["updates"]["accepted"] for j in status] == [4, 4]
    assert [j["version"] for j in status] == [2, 4]
    svc.close()

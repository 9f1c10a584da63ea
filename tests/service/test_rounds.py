"""Synchronous rounds on the wall clock: cohort, quorum, deadline, late updates, restarts."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from fedtempo.service.party import PartyStats, Trained, WorkTask
from tests.service.helpers import InProcess, tiny_spec


class Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


def _round_job(svc: InProcess, quorum: int) -> tuple[str, list]:  # type: ignore[type-arg]
    spec = tiny_spec(
        {"algorithm": "fedavg", "rounds": 3, "clients_per_round": 3},
        quorum=quorum,
        deadline_s=30.0,
        gather_s=60.0,
    )
    job = svc.create(spec)
    deltas = {f"r{r}-p{i}": torch.full((15,), 0.1 * (i + 1)) for r in range(3) for i in range(3)}
    return job, [svc.party(svc.enroll(job, f"p{i}"), deltas, 4) for i in range(3)]


def _ask_all(parties: list) -> list:  # type: ignore[type-arg]
    """Every party asks; those asked before the cohort was complete ask once more."""
    first = [p.ask() for p in parties]
    return [p.ask() if t is None else t for p, t in zip(parties, first, strict=True)]


def test_deadline_with_quorum_closes_the_round_and_late_updates_are_refused(tmp_path: Path) -> None:
    clock = Clock()
    svc = InProcess(tmp_path / "state", clock)
    job, parties = _round_job(svc, quorum=2)
    tasks = _ask_all(parties)
    assert all(isinstance(t, WorkTask) and t.round == 0 for t in tasks)
    for p, t in zip(parties[:2], tasks[:2], strict=True):
        p.step(t, PartyStats())  # type: ignore[arg-type]
    # a restart keeps the round, its absolute deadline and the two buffered updates
    deadline = svc.service.jobs[job].open.deadline  # type: ignore[attr-defined]
    svc.close()
    svc = InProcess(tmp_path / "state", clock, svc.token)
    restored = svc.service.jobs[job]
    assert restored.open.deadline == deadline and len(restored.open.got) == 2  # type: ignore[attr-defined]
    clock.t += 31.0
    restored.tick(clock.t)
    status = svc.wait_version(job, 1)
    assert status["version"] == 1 and status["rounds_done"] == 1
    straggler = svc.party(parties[2].cred, {}, 4)
    code, answer = straggler.upload(tasks[2], Trained(torch.ones(15), 4, 1, 0.5))  # type: ignore[arg-type]
    assert code == 409 and "late" in answer["error"]
    status = svc.client.get(f"/v1/jobs/{job}", headers=svc.admin()).json()
    assert status["updates"]["rejected"] == {"late": 1} and status["version"] == 1
    svc.close()


def test_a_round_below_quorum_at_its_deadline_fails_and_a_new_one_starts(tmp_path: Path) -> None:
    clock = Clock()
    svc = InProcess(tmp_path / "state", clock)
    job, parties = _round_job(svc, quorum=3)
    tasks = _ask_all(parties)
    parties[0].step(tasks[0], PartyStats())  # type: ignore[arg-type]
    clock.t += 31.0
    svc.service.jobs[job].tick(clock.t)
    status = svc.client.get(f"/v1/jobs/{job}", headers=svc.admin()).json()
    assert status["rounds_failed"] == 1 and status["version"] == 0
    assert status["updates"]["rejected"] == {"round failed: quorum not reached": 1}
    again = _ask_all(parties)
    assert all(isinstance(t, WorkTask) and t.round == 1 for t in again)
    svc.close()


def test_gather_counts_from_a_partys_first_ask_however_often_it_polls(tmp_path: Path) -> None:
    """Quorum parties that keep long-polling start the round gather_s after they first asked."""
    clock = Clock()
    svc = InProcess(tmp_path / "state", clock)
    spec = tiny_spec(
        {"algorithm": "fedavg", "rounds": 1, "clients_per_round": 3}, quorum=2, gather_s=1.0
    )
    job = svc.create(spec)
    parties = [svc.party(svc.enroll(job, f"p{i}"), {}, 4) for i in range(3)]
    for _ in range(3):  # asking every 0.4 s: still gathering
        assert parties[0].ask() is None and parties[1].ask() is None
        clock.t += 0.4
    tasks = [parties[0].ask(), parties[1].ask()]  # 1.2 s after their first ask
    assert all(isinstance(t, WorkTask) and t.round == 0 for t in tasks)
    assert svc.status(job)["round"]["cohort"] == [0, 1]
    svc.close()

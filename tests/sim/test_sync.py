"""Simulator tests on event logs with scripted device timings."""

from __future__ import annotations

import simpy
import torch

from fedtempo.sim import Recorder, SimTask, Simulation
from fedtempo.sim.executor import EvaluatesHere
from fedtempo.testing import (
    RecordingFedAvg,
    ScriptedDevices,
    Timing,
    fedavg_driver,
    runtime,
    tiny_task,
)


def _simulate(
    task: SimTask,
    devices: ScriptedDevices,
    *,
    rounds: int = 1,
    k: int = 4,
    deadline: float | None = None,
    rule: RecordingFedAvg | None = None,
    eval_interval: float = 0.0,
    time_limit: float | None = None,
) -> tuple[Recorder, RecordingFedAvg]:
    rt = runtime(task, devices)
    recording = rule or RecordingFedAvg()

    def server(env: simpy.Environment, t: SimTask):  # type: ignore[no-untyped-def]
        return fedavg_driver(
            rt, t, rule=recording, clients_per_round=k, rounds=rounds, deadline=deadline
        ).run()

    Simulation(
        [task],
        [server],
        rt.executor,
        rt.recorder,
        eval_interval=eval_interval,
        time_limit=time_limit,
        env=rt.env,
    ).run()
    return rt.recorder, recording


def _log(recorder: Recorder) -> list[tuple[float, str, int]]:
    return [(e.time, e.kind, e.client) for e in recorder.events]


def test_event_order_with_scripted_timings() -> None:
    devices = ScriptedDevices({0: Timing(1, 4, 1), 1: Timing(2, 1, 1), 2: Timing(0.5, 0.5, 0.5)})
    rec, _ = _simulate(tiny_task(num_clients=3), devices, k=3)
    assert _log(rec) == [
        (0, "round", -1),
        (0, "dispatch", 0),
        (0, "dispatch", 1),
        (0, "dispatch", 2),
        (0.5, "download", 2),
        (1, "download", 0),  # scheduled at t=0, before client 2's compute (scheduled at 0.5)
        (1.0, "compute", 2),
        (1.5, "upload", 2),
        (2, "download", 1),
        (3, "compute", 1),
        (4, "upload", 1),
        (5, "compute", 0),
        (6, "upload", 0),
        (6, "aggregate", -1),
    ]


def test_ties_are_broken_by_client_id() -> None:
    devices = ScriptedDevices({}, default=Timing(1, 1, 1))
    rec, _ = _simulate(tiny_task(num_clients=4), devices, k=4)
    uploads = [e.client for e in rec.events if e.kind == "upload"]
    assert uploads == [0, 1, 2, 3]
    assert all(e.time == 3 for e in rec.events if e.kind == "upload")


def test_rounds_chain_and_versions_advance() -> None:
    devices = ScriptedDevices({}, default=Timing(1, 2, 1))
    rec, rule = _simulate(tiny_task(num_clients=4), devices, rounds=3, k=2)
    aggs = [(e.time, e.version) for e in rec.events if e.kind == "aggregate"]
    assert aggs == [(4, 1), (8, 2), (12, 3)]
    assert [len(c) for c in rule.calls] == [2, 2, 2]
    for i, call in enumerate(rule.calls):
        assert {u.base_version for u in call} == {i}


def test_deadline_drops_stragglers_and_accepts_exact_arrivals() -> None:
    devices = ScriptedDevices(
        {0: Timing(1, 1, 1), 1: Timing(1, 2, 1), 2: Timing(1, 10, 1), 3: Timing(1, 20, 1)}
    )
    rec, rule = _simulate(tiny_task(num_clients=4), devices, k=4, deadline=4.0)
    assert sorted(u.client for u in rule.calls[0]) == [0, 1]  # client 1 arrives at exactly 4
    late = [(e.time, e.client) for e in rec.events if e.kind == "late"]
    assert late == [(4.0, 2), (4.0, 3)]
    assert not [e for e in rec.events if e.kind == "upload" and e.client in (2, 3)]
    agg = [e for e in rec.events if e.kind == "aggregate"]
    assert agg[0].time == 4.0 and agg[0].duration == 2.0


def test_aggregation_does_not_depend_on_arrival_order() -> None:
    fast_first = ScriptedDevices({0: Timing(1, 1, 1), 1: Timing(1, 5, 1)})
    slow_first = ScriptedDevices({0: Timing(1, 5, 1), 1: Timing(1, 1, 1)})
    a = tiny_task(num_clients=2)
    b = tiny_task(num_clients=2)
    _simulate(a, fast_first, k=2)
    _simulate(b, slow_first, k=2)
    assert torch.equal(a.model.params, b.model.params)


def test_fedavg_round_is_the_sample_weighted_mean_of_local_models() -> None:
    task = tiny_task(num_clients=3)
    start = task.model.params.clone()
    _, rule = _simulate(task, ScriptedDevices({}), k=3)
    updates = rule.calls[0]
    n = sum(u.num_samples for u in updates)
    expected = start + sum(u.delta * (u.num_samples / n) for u in updates)
    assert torch.allclose(task.model.params, expected, atol=1e-6)
    assert task.model.version == 1 and task.model.updates_applied == 3


def test_evaluations_follow_the_interval_and_see_same_instant_aggregations() -> None:
    devices = ScriptedDevices({}, default=Timing(1, 1, 1))  # rounds end at 3, 6, 9
    rec, _ = _simulate(tiny_task(num_clients=2), devices, rounds=3, k=2, eval_interval=3.0)
    assert [(e.time, e.version) for e in rec.evaluations] == [(0, 0), (3, 1), (6, 2), (9, 3)]


def test_time_limit_stops_the_run() -> None:
    task = tiny_task(num_clients=2)
    devices = ScriptedDevices({}, default=Timing(1, 1, 1))
    rec, _ = _simulate(task, devices, rounds=100, k=2, time_limit=10.0)
    assert task.model.version == 3
    assert rec.evaluations[-1].time == 10.0


def test_energy_is_recorded_per_phase() -> None:
    devices = ScriptedDevices({}, default=Timing(1, 3, 2), compute_watts=2.0, upload_watts=0.5)
    rec, rule = _simulate(tiny_task(num_clients=2), devices, k=2)
    compute = [e.energy for e in rec.events if e.kind == "compute"]
    upload = [e.energy for e in rec.events if e.kind == "upload"]
    assert compute == [6.0, 6.0] and upload == [1.0, 1.0]
    assert [u.energy_j for u in rule.calls[0]] == [7.0, 7.0]
    assert all(u.bytes_sent == 4 * (6 * 3 + 3) for u in rule.calls[0])  # logreg 6 -> 3


def test_on_finish_runs_once_after_the_clock_stops_and_before_the_final_evaluation() -> None:
    task = tiny_task(num_clients=3)
    rt = runtime(task, ScriptedDevices({}, default=Timing(1, 1, 1)))

    def server(env: simpy.Environment, t: SimTask):  # type: ignore[no-untyped-def]
        return fedavg_driver(rt, t, rule=RecordingFedAvg(), clients_per_round=3, rounds=2).run()

    sim = Simulation([task], [server], rt.executor, rt.recorder, env=rt.env)
    seen: list[tuple[float, int, int]] = []
    sim.on_finish = lambda: seen.append(
        (
            rt.env.now,
            len(rt.recorder.evaluations),
            sum(e.kind == "aggregate" for e in rt.recorder.events),
        )
    )
    sim.run()
    assert seen == [(6.0, 0, 2)]  # both rounds done, nothing evaluated yet
    assert len(rt.recorder.evaluations) == 1


def test_waiting_trainings_are_started_before_each_evaluation() -> None:
    # a pool's workers train while the simulator's thread evaluates (not after it)
    task = tiny_task(num_clients=3)
    rt = runtime(task, ScriptedDevices({}, default=Timing(1, 1, 1)))
    log: list[str] = []
    inner, evaluate = rt.executor, task.evaluate

    class Recording(EvaluatesHere):
        def submit(self, job):  # type: ignore[no-untyped-def]
            return inner.submit(job)

        def flush(self) -> None:
            log.append("flush")

        def close(self) -> None:
            inner.close()

    def evaluating(params):  # type: ignore[no-untyped-def]
        log.append("evaluate")
        return evaluate(params)

    task.evaluate = evaluating

    def server(env: simpy.Environment, t: SimTask):  # type: ignore[no-untyped-def]
        return fedavg_driver(rt, t, rule=RecordingFedAvg(), clients_per_round=3, rounds=2).run()

    Simulation([task], [server], Recording(), rt.recorder, eval_interval=2.0, env=rt.env).run()
    assert log.count("evaluate") >= 3
    assert log == ["flush", "evaluate"] * log.count("evaluate")

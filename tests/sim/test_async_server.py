"""The asynchronous server on scripted timings: exact schedules, reductions, failures."""

from __future__ import annotations

import simpy
import torch

from fedtempo.aggregation import (
    AsyncAggregator,
    BufferStep,
    Constant,
    DeltaStep,
    Euclidean,
    MixStep,
)
from fedtempo.client.local import LocalSpec
from fedtempo.sim import SimTask, Simulation
from fedtempo.sim.asyncserver import AdaptiveEpochs, AsyncServer
from fedtempo.testing import (
    RecordingFedAvg,
    ScriptedDevices,
    Timing,
    fedavg_driver,
    runtime,
    tiny_task,
)


def _run_async(
    task,
    devices,
    rule,
    *,
    concurrency,
    max_updates,
    epochs=None,  # type: ignore[no-untyped-def]
    dispatch="round-robin",
):
    rt = runtime(task, devices)
    servers: list[AsyncServer] = []

    def server(env: simpy.Environment, t: SimTask):  # type: ignore[no-untyped-def]
        s = AsyncServer(
            rt,
            t,
            rule=rule,
            concurrency=concurrency,
            max_updates=max_updates,
            dispatch=dispatch,
            epochs=epochs,
        )
        servers.append(s)
        return s.run()

    Simulation([task], [server], rt.executor, rt.recorder, env=rt.env).run()
    return rt.recorder, servers[0]


def test_scripted_schedule_gives_exact_versions_and_staleness() -> None:
    # client 0: a session takes 2 s, client 1: 3 s; both always busy (concurrency 2).
    devices = ScriptedDevices({0: Timing(0.5, 1, 0.5), 1: Timing(1, 1, 1)})
    rule = AsyncAggregator(Euclidean(), DeltaStep())
    rec, _ = _run_async(tiny_task(num_clients=2), devices, rule, concurrency=2, max_updates=5)
    got = [(u.time, u.client, u.base_version, u.version, u.staleness) for u in rec.updates]
    assert got == [
        (2.0, 0, 0, 1, 0),  # c0 from v0, nothing in between
        (3.0, 1, 0, 2, 1),  # c1 from v0, v1 applied since
        (4.0, 0, 1, 3, 1),  # c0 restarted at 2 from v1; v2 applied since
        (6.0, 0, 3, 4, 0),  # c0 restarted at 4 from v3 (c1 restarted at 3 from v2)
        (6.0, 1, 2, 5, 2),  # same instant: client id order; v3, v4 applied since
    ]
    assert rec.updates[0].gamma == 0.0
    assert all(u.gamma > 0 for u in rec.updates[1:] if u.staleness > 0)


def test_same_instant_arrivals_are_processed_in_client_order() -> None:
    devices = ScriptedDevices({}, default=Timing(1, 1, 1))
    rule = AsyncAggregator(Constant(), MixStep(0.5))
    rec, _ = _run_async(tiny_task(num_clients=4), devices, rule, concurrency=4, max_updates=4)
    assert [(u.time, u.client) for u in rec.updates] == [(3.0, c) for c in range(4)]
    assert [u.staleness for u in rec.updates] == [0, 1, 2, 3]


def test_concurrency_limit_is_respected() -> None:
    devices = ScriptedDevices({c: Timing(1, 1 + c, 1) for c in range(6)})
    rule = AsyncAggregator(Constant(), DeltaStep())
    rec, _ = _run_async(
        tiny_task(num_clients=6), devices, rule, concurrency=3, max_updates=20, dispatch="random"
    )
    busy = 0
    peak = 0
    for e in rec.events:
        if e.kind == "dispatch":
            busy += 1
        elif e.kind in ("upload", "fail", "offline", "late"):
            busy -= 1
        peak = max(peak, busy)
    assert peak == 3


def test_fedbuff_with_buffer_equal_cohort_equals_a_fedavg_round() -> None:
    devices = ScriptedDevices({}, default=Timing(0, 0, 0))  # zero delays
    a, b = tiny_task(num_clients=4), tiny_task(num_clients=4)
    rule = AsyncAggregator(Constant(), BufferStep(size=4, by_samples=True))
    _run_async(a, devices, rule, concurrency=4, max_updates=4)
    rt = runtime(b, devices)

    def sync(env: simpy.Environment, t: SimTask):  # type: ignore[no-untyped-def]
        return fedavg_driver(rt, t, rule=RecordingFedAvg(), clients_per_round=4, rounds=1).run()

    Simulation([b], [sync], rt.executor, rt.recorder, env=rt.env).run()
    assert a.model.version == b.model.version == 1
    assert torch.equal(a.model.params, b.model.params)


def test_asyncfeded_kappa_zero_keeps_epochs_and_adapts_otherwise() -> None:
    devices = ScriptedDevices({0: Timing(0, 1, 0), 1: Timing(0, 1.5, 0), 2: Timing(0, 2.5, 0)})
    spec = LocalSpec(epochs=1, batch_size=16, lr=0.1)
    rule = AsyncAggregator(Euclidean(), DeltaStep())
    fixed, _ = _run_async(
        tiny_task(3, spec),
        devices,
        rule,
        concurrency=3,
        max_updates=12,
        epochs=AdaptiveEpochs(kappa=0.0, k_init=3),
    )
    assert {u.epochs_next for u in fixed.updates} == {3}
    steps = {e.duration for e in fixed.events if e.kind == "compute"}
    assert steps  # durations come from the scripted devices
    adaptive, server = _run_async(
        tiny_task(3, spec),
        devices,
        rule,
        concurrency=3,
        max_updates=12,
        epochs=AdaptiveEpochs(kappa=1.0, k_init=3),
    )
    assert len({u.epochs_next for u in adaptive.updates}) > 1
    assert set(server.local_epochs) == {0, 1, 2}


def test_failed_clients_restart_from_the_newest_model() -> None:
    devices = ScriptedDevices({}, default=Timing(1, 1, 1), failure_probability=0.5)
    rule = AsyncAggregator(Constant(), DeltaStep())
    rec, server = _run_async(
        tiny_task(num_clients=3), devices, rule, concurrency=3, max_updates=30, dispatch="random"
    )
    fails = [e for e in rec.events if e.kind == "fail"]
    assert fails and len(rec.updates) == 30
    for f in fails:  # the failed client's next dispatch starts from the version current then
        nxt = next(
            e
            for e in rec.events
            if e.kind == "dispatch" and e.client == f.client and e.time >= f.time
        )
        current = max([u.version for u in rec.updates if u.time <= nxt.time], default=0)
        assert nxt.version == current
    assert len(server.state.store) <= 4  # only referenced versions are kept

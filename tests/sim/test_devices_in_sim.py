"""Devices inside the simulator: availability interrupts, failures, shared uplink."""

from __future__ import annotations

import math

import numpy as np
import simpy

from fedtempo.sim import SharedUplink, SimTask, Simulation
from fedtempo.sim.executor import TrainingJob
from fedtempo.sim.timeline import session
from fedtempo.system import ConstantLink, IntervalAvailability
from fedtempo.testing import (
    RecordingFedAvg,
    ScriptedDevices,
    Timing,
    fedavg_driver,
    runtime,
    tiny_task,
)


def _run_sync(task: SimTask, devices: ScriptedDevices, rounds: int, k: int):  # type: ignore[no-untyped-def]
    rt = runtime(task, devices)
    rule = RecordingFedAvg()

    def server(env: simpy.Environment, t: SimTask):  # type: ignore[no-untyped-def]
        return fedavg_driver(rt, t, rule=rule, clients_per_round=k, rounds=rounds).run()

    Simulation([task], [server], rt.executor, rt.recorder, env=rt.env).run()
    return rt.recorder, rule


def test_going_offline_interrupts_training_and_loses_the_work() -> None:
    # Client 1's window closes at t=2.5, in the middle of its compute phase [1, 4).
    avail = IntervalAvailability(
        [np.array([[0.0, 1000.0]]), np.array([[0.0, 2.5], [10.0, 1000.0]])],
        np.array([0, 1]),
        np.array([0.0, 0.0]),
        np.array([2000.0, 2000.0]),
    )
    devices = ScriptedDevices({}, default=Timing(1, 3, 1), availability=avail, compute_watts=2.0)
    rec, rule = _run_sync(tiny_task(num_clients=2), devices, rounds=1, k=2)
    log = [(e.time, e.kind, e.client) for e in rec.events]
    assert (2.5, "offline", 1) in log
    assert not [e for e in rec.events if e.client == 1 and e.kind in ("compute", "upload")]
    assert [u.client for u in rule.calls[0]] == [0]
    offline = next(e for e in rec.events if e.kind == "offline")
    assert offline.duration == 1.5 and offline.energy == 3.0  # 1.5 s of compute at 2 W


def test_round_waits_for_someone_to_be_available() -> None:
    avail = IntervalAvailability(
        [np.array([[5.0, 100.0]])], np.array([0, 0]), np.array([0.0, 0.0]), np.array([200.0])
    )
    devices = ScriptedDevices({}, default=Timing(1, 1, 1), availability=avail)
    rec, _ = _run_sync(tiny_task(num_clients=2), devices, rounds=1, k=2)
    first = rec.events[0]
    assert (first.time, first.kind) == (5.0, "round")


def test_observed_failure_rate_matches_p() -> None:
    p, rounds, k = 0.3, 150, 4
    devices = ScriptedDevices({}, default=Timing(1, 1, 1), failure_probability=p)
    rec, rule = _run_sync(tiny_task(num_clients=4), devices, rounds=rounds, k=k)
    n = rounds * k
    fails = sum(1 for e in rec.events if e.kind == "fail")
    assert abs(fails - p * n) <= 4 * math.sqrt(n * p * (1 - p))
    assert fails + sum(len(c) for c in rule.calls) == n
    lost = [e.duration for e in rec.events if e.kind == "fail"]
    assert min(lost) >= 0 and max(lost) <= 2 * 3.0  # U(0, 2 x round time of 3 s)


def _uplink_run(starts: dict[int, float], bits: float, rate: float) -> dict[int, float]:
    env = simpy.Environment()
    link = ConstantLink(np.full(3, rate))
    uplink = SharedUplink(env, link)
    done: dict[int, float] = {}

    def sender(c: int, at: float):  # type: ignore[no-untyped-def]
        yield env.timeout(at)
        yield uplink.transfer(c, bits)
        done[c] = env.now

    for c, at in starts.items():
        env.process(sender(c, at))
    env.run()
    return done


def test_shared_uplink_splits_bandwidth() -> None:
    # Alone: 1 Mbit at 1 Mbit/s = 1 s. Two at once: each gets half, both end at 2 s.
    assert _uplink_run({0: 0.0}, 1e6, 1e6) == {0: 1.0}
    assert _uplink_run({0: 0.0, 1: 0.0}, 1e6, 1e6) == {0: 2.0, 1: 2.0}
    # Staggered: 0 alone for 0.5 s (0.5 Mbit), then both at 0.5 Mbit/s: 0 ends at 1.5;
    # 1 has sent 0.5 Mbit by then, alone again: ends at 2.0.
    done = _uplink_run({0: 0.0, 1: 0.5}, 1e6, 1e6)
    assert done[0] == 1.5 and abs(done[1] - 2.0) < 1e-9


def test_a_session_cancelled_on_the_shared_uplink_frees_its_share() -> None:
    task = tiny_task(num_clients=2)
    devices = ScriptedDevices({}, default=Timing(0, 0, 0))
    rt = runtime(task, devices)
    uplink = SharedUplink(rt.env, ConstantLink(np.full(2, float(task.profile.size_bits))))
    rt = rt.__class__(rt.env, rt.devices, rt.executor, rt.recorder, rt.streams, uplink)
    procs = [
        rt.env.process(session(rt, task, TrainingJob(0, c, 0, task.model.params))) for c in (0, 1)
    ]

    def kill():  # type: ignore[no-untyped-def]
        yield rt.env.timeout(0.5)
        procs[1].interrupt("deadline")

    rt.env.process(kill())
    rt.env.run()
    # Both shared until 0.5 (each sent a quarter), then client 0 alone: 0.75 left at full rate.
    upload = next(e for e in rt.recorder.events if e.kind == "upload")
    assert upload.client == 0 and abs(upload.time - 1.25) < 1e-9
    assert procs[1].value is None

"""Every round algorithm runs on the one device timeline: failures and availability windows act
on pruned and SplitFed rounds exactly as on FedAvg's (event-log tests), and every training goes
through the executor (a process pool gives bit-identical results)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from fedtempo.experiment.build import Built, build
from fedtempo.experiment.config import load
from fedtempo.experiment.results import run_experiment
from fedtempo.sim.recorder import Event, Recorder
from fedtempo.system import IntervalAvailability
from fedtempo.testing import ScriptedDevices, Timing

PRUNED = [
    "server.algorithm=pruned",
    "partition.num_clients=4",
    "partition.client_test_fraction=0.2",
    "server.clients_per_round=4",
    "server.rounds=2",
    "train.iterations=3",
    "devices.uplink.kind=wireless",
    "server.pruning.bandwidth_hz=2e5",
    "eval.interval=0",
]
SCRIPTED_PRUNED = [*PRUNED, "server.pruning.threshold_s=1000"]  # scripted computing takes 3 s


def _split(root: Path) -> list[str]:
    return [
        "data.dataset=mnist",
        f"data.root={root}",
        "model.name=cnn-s",
        "server.algorithm=splitfed",
        "server.split.planner=fixed",
        "server.split.fixed_cut=2",
        "partition.num_clients=4",
        "server.clients_per_round=4",
        "server.rounds=2",
        "train.iterations=3",
        "eval.interval=0",
    ]


def _with_devices(built: Built, devices: ScriptedDevices) -> Built:
    devices.uplink = built.population.uplink  # the pruned allocation reads its channel
    driver = built.rounds
    driver.rt = dataclasses.replace(driver.rt, devices=devices)
    return built


def _closing_window(at: float) -> IntervalAvailability:
    """Client 1 is ready only until ``at`` (and again much later); the others always."""
    always = np.array([[0.0, 1e6]])
    return IntervalAvailability(
        [always, np.array([[0.0, at], [1e5, 1e6]])],
        np.array([0, 1, 0, 0]),
        np.zeros(4),
        np.array([2e6, 2e6]),
    )


def _by_version(events: list[Event], kind: str, version: int) -> list[int]:
    return sorted(e.client for e in events if e.kind == kind and e.version == version)


def _aggregated(events: list[Event]) -> list[int]:
    return [int(e.duration) for e in events if e.kind == "aggregate"]


def _check_offline_loses_the_work(built: Built) -> list[Event]:
    result = built.simulation.run()
    events = result.recorder.events
    offline = [e for e in events if e.kind == "offline"]
    assert [(e.time, e.client, e.version) for e in offline] == [(2.5, 1, 0)]
    assert 1 not in _by_version(events, "upload", 0)  # its work is lost
    assert _by_version(events, "upload", 0) == [0, 2, 3]
    assert _aggregated(events)[0] == 3
    return events


def _check_failures_upload_nothing(built: Built) -> None:
    result = built.simulation.run()
    events = result.recorder.events
    fails = [e for e in events if e.kind == "fail"]
    assert fails, "p = 0.5 over 8 sessions: some fail"
    for version in (0, 1):
        failed = _by_version(events, "fail", version)
        uploaded = _by_version(events, "upload", version)
        assert not set(failed) & set(uploaded)
        assert sorted(failed + uploaded) == [0, 1, 2, 3]
        assert _aggregated(events)[version] == len(uploaded)
    assert all(0 <= e.duration <= 2 * 1000 for e in fails)


def test_pruned_round_loses_an_offline_devices_work() -> None:
    built = build(load(None, SCRIPTED_PRUNED), Recorder())
    devices = ScriptedDevices({}, default=Timing(1, 3, 1), availability=_closing_window(2.5))
    _check_offline_loses_the_work(_with_devices(built, devices))
    state = built.rounds.state
    assert 1 not in state.parts  # its personal part never changed


def test_pruned_failed_sessions_upload_nothing() -> None:
    built = build(load(None, SCRIPTED_PRUNED), Recorder())
    devices = ScriptedDevices({}, default=Timing(1, 3, 1), failure_probability=0.5)
    _check_failures_upload_nothing(_with_devices(built, devices))


def test_splitfed_round_loses_an_offline_devices_work(shared_mnist: Path) -> None:
    built = build(load(None, _split(shared_mnist)), Recorder())
    devices = ScriptedDevices({}, default=Timing(1, 1, 1), availability=_closing_window(2.5))
    events = _check_offline_loses_the_work(_with_devices(built, devices))
    # client 1 was mid-iteration: download [0, 1), compute [1, 2), activations [2, 3)
    assert [e.kind for e in events if e.client == 1 and e.version == 0] == [
        "dispatch",
        "download",
        "compute",
        "offline",
    ]


def test_splitfed_failed_sessions_upload_nothing(shared_mnist: Path) -> None:
    built = build(load(None, _split(shared_mnist)), Recorder())
    devices = ScriptedDevices({}, default=Timing(1, 1, 1), failure_probability=0.5)
    _check_failures_upload_nothing(_with_devices(built, devices))


def _bit_identical(overrides: list[str]) -> None:
    _, inline = run_experiment(load(None, overrides), None)
    _, pooled = run_experiment(load(None, [*overrides, "executor=process", "workers=2"]), None)
    assert torch.equal(inline.final_params[0], pooled.final_params[0])
    strip = lambda evs: [(e.time, e.version, e.accuracy, e.loss) for e in evs]  # noqa: E731
    assert strip(inline.recorder.evaluations) == strip(pooled.recorder.evaluations)
    kinds = lambda evs: [(e.time, e.kind, e.client, e.bytes) for e in evs]  # noqa: E731
    assert kinds(inline.recorder.events) == kinds(pooled.recorder.events)


def test_pruned_with_a_process_pool_is_bit_identical() -> None:
    _bit_identical([*PRUNED, "eval.interval=1", "devices.failure_probability=0.2"])


def test_splitfed_with_a_process_pool_is_bit_identical(shared_mnist: Path) -> None:
    _bit_identical([*_split(shared_mnist), "server.split.planner=optimal"])


@pytest.mark.parametrize("server_lr", [0.5, 2.0])
def test_fedavg_server_lr_scales_the_round_step(server_lr: float) -> None:
    base = ["server.rounds=1", "eval.interval=0"]
    plain = build(load(None, base), Recorder())
    start = plain.task.model.params.clone()
    plain.simulation.run()
    scaled = build(load(None, [*base, f"server.server_lr={server_lr}"]), Recorder())
    scaled.simulation.run()
    step = plain.task.model.params - start
    assert torch.allclose(scaled.task.model.params - start, server_lr * step, atol=1e-6)
    assert not torch.allclose(scaled.task.model.params, plain.task.model.params)


def test_a_round_deadline_drops_pruned_stragglers() -> None:
    fixed = ["server.pruning.policy=fixed", "server.pruning.ratio=0.5"]  # equal shares: fast
    overrides = [*PRUNED, *fixed, "server.deadline=8", "server.rounds=1"]
    built = build(load(None, overrides), Recorder())
    slow = {1: Timing(1, 9, 1)}  # computes past the deadline; the others are done by 5.4 s
    result = _with_devices(built, ScriptedDevices(slow, default=Timing(1, 3, 1))).simulation.run()
    log = result.recorder.events
    assert [(e.time, e.client) for e in log if e.kind == "late"] == [(8.0, 1)]
    assert _by_version(log, "upload", 0) == [0, 2, 3]
    assert _aggregated(log) == [3]
    assert 1 not in built.rounds.state.parts

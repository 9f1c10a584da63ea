"""Round-robin that spares the devices spending the most energy per FLOP (mafl.spare_devices)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedtempo.errors import ConfigError
from fedtempo.experiment.config import validate as validate_config
from fedtempo.experiment.results import run_experiment
from fedtempo.multitask import SCAScheduler, costly_devices, round_robin, validate
from tests.test_multitask import context, planning_setup, two_tasks


def test_costly_devices_are_the_fastest_and_keep_the_lightest_model():
    speed = np.array([1.0, 5.0, 2.0, 4.0, 3.0])
    flops = np.array([3e6, 2e4, 1e6])  # the lightest model is 1
    heavy = costly_devices(speed, flops, 2, "heavy")
    assert heavy.tolist() == [
        [False, False, False],
        [True, False, True],
        [False, False, False],
        [True, False, True],
        [False, False, False],
    ]
    assert (costly_devices(speed, flops, 2, "all").sum(axis=1) == [0, 3, 0, 3, 0]).all()
    assert not costly_devices(speed, flops, 0, "heavy").any()


def sessions(s):
    return [(x.device, x.model, x.start) for x in s.sessions()]


@pytest.mark.parametrize("seed", range(4))
def test_spared_pairs_are_never_scheduled_and_their_channels_go_to_the_others(seed):
    ctx = context(seed)
    ctx = dataclasses.replace(ctx, has_data=np.ones_like(ctx.has_data))
    plain = round_robin(ctx)
    spare = np.zeros_like(ctx.has_data)
    spare[[0, 5], :2] = True  # devices 0 and 5 keep only model 2
    kept = round_robin(ctx, spare)
    validate(kept, ctx.has_data, ctx.channels, ctx.available, ctx.busy_until, ctx.channel_used)
    assert not any(spare[d, m] for d, m, _ in sessions(kept))
    # the spared devices keep every turn they had on the model left to them
    light = {x for x in sessions(plain) if x[0] in (0, 5) and x[1] == 2}
    assert light <= set(sessions(kept))
    # a round loses no channel to sparing while a free device's turn is on a model it keeps
    for t in range(ctx.horizon):
        r = ctx.first_round + t
        turns = [d for d in range(ctx.devices) if ctx.free(d, t) and not spare[d, (r + d) % 3]]
        room = ctx.channels - int(ctx.channel_used[t])
        assert kept.starts[:, :, t].sum() == min(room, len(turns))
        assert plain.starts[:, :, t].sum() >= kept.starts[:, :, t].sum()


def test_no_spared_device_reduces_to_round_robin():
    ctx = context(1)
    none = np.zeros_like(ctx.has_data)
    assert sessions(round_robin(ctx, none)) == sessions(round_robin(ctx))


def test_the_sizing_half_sizes_the_spared_schedule():
    ctx, ph = planning_setup(3)
    spare = costly_devices(ph.speed, ph.train_flops, 3, "heavy")
    sized = SCAScheduler(ph, beta_e=0.01, mode="sizing", spare=spare)(ctx)
    assert sessions(sized) == sessions(round_robin(ctx, spare))
    assert not any(spare[d, m] for d, m, _ in sessions(sized))


def test_the_joint_optimiser_plans_no_spared_pair():
    ctx, ph = planning_setup(3)
    spare = costly_devices(ph.speed, ph.train_flops, 3, "heavy")
    free = SCAScheduler(ph, beta_e=0.0, mode="joint")(ctx)
    assert any(spare[d, m] for d, m, _ in sessions(free))  # the mask is what keeps them out
    joint = SCAScheduler(ph, beta_e=0.0, mode="joint", spare=spare)(ctx)
    validate(joint, ctx.has_data, ctx.channels, ctx.available, ctx.busy_until, ctx.channel_used)
    assert joint.sessions()
    assert not any(spare[d, m] for d, m, _ in sessions(joint))


def dispatches(config: dict) -> list[tuple[int, int]]:
    _, result = run_experiment(validate_config(config), None)
    return [(e.client, e.task) for e in result.recorder.events if e.kind == "dispatch"]


def test_spare_devices_reaches_the_run_warm_up_included():
    # two_tasks: 6 devices, task 0 an mlp on all of them, task 1 a logreg on devices 1, 3, 5
    plain = dispatches(two_tasks("round-robin", spare_devices=0, warmup_rounds=2))
    spared = dispatches(two_tasks("round-robin", spare_devices=2, warmup_rounds=2))
    devices = dispatches(two_tasks("round-robin", spare_devices=2, spare_models="all"))
    heavy_on = {d for d, m in plain if m == 0}
    assert len(heavy_on) == 6
    # the two fastest devices train no mlp, the others take their channels
    left = {d for d, m in spared if m == 0}
    assert len(left) == 4
    assert sum(m == 0 for _, m in spared) >= sum(m == 0 for _, m in plain) - 1
    assert {d for d, _ in devices} == left
    # the lightest model keeps its sessions on the spared devices
    assert {d for d, m in spared if m == 1} == {d for d, m in plain if m == 1}


def test_bad_spare_settings_are_named():
    with pytest.raises(ConfigError, match=r"mafl\.spare_devices: 6 of mafl\.devices = 6"):
        validate_config(two_tasks("round-robin", spare_devices=6))
    with pytest.raises(ConfigError, match=r"mafl\.spare_devices: applies to round-robin"):
        validate_config(two_tasks("async-random", spare_devices=1))
    with pytest.raises(ConfigError, match=r"mafl\.spare_models"):
        validate_config(two_tasks("round-robin", spare_devices=1, spare_models="some"))

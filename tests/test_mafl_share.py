"""MA-FL: the per-model session floor (``model_share``) and the rounding that honours floors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedtempo.alloc.mafl import candidates, plan
from fedtempo.alloc.pruning import Infeasible
from fedtempo.experiment.config import validate as validate_config
from fedtempo.experiment.results import run_experiment
from fedtempo.multitask.optimised import SCAScheduler
from tests.test_multitask import context, planning_setup, problem, two_tasks


def per_model(schedule, models: int = 3) -> np.ndarray:
    return np.bincount([x.model for x in schedule.sessions()], minlength=models)


@pytest.mark.parametrize("seed", [1, 4])
def test_model_share_gives_every_model_an_equal_split_of_the_free_slots(seed):
    ctx, ph = planning_setup(seed)
    free = int(np.sum(ctx.channels - ctx.channel_used))
    alone = per_model(SCAScheduler(ph, beta_e=0.05, calibration=None)(ctx))
    assert alone.min() < free // 3  # without the floor, one model gets less than its split
    shared = SCAScheduler(ph, beta_e=0.05, calibration=None, model_share=1.0)
    counts = per_model(shared(ctx))
    assert counts.min() >= free // 3 == shared.log[-1].floor
    half = SCAScheduler(ph, beta_e=0.05, calibration=None, model_share=0.5)
    assert half.floors(ctx)[0] == int(0.5 * free / 3)


def test_a_floor_no_schedule_meets_is_lowered_but_min_sessions_is_not():
    ctx, ph = planning_setup(0)
    s = SCAScheduler(ph, beta_e=0.05, calibration=None, model_share=1.0)
    top = s.floors(ctx)[0]
    with pytest.raises(Infeasible):
        plan(s.problem(ctx, top))
    counts = per_model(s(ctx))
    assert 0 < s.log[-1].floor < top
    assert counts.min() >= s.log[-1].floor
    strict = SCAScheduler(ph, beta_e=0.05, calibration=None, min_sessions=top, model_share=1.0)
    with pytest.raises(Infeasible, match=f"needs {top}|at least {top} session"):
        strict(ctx)
    sizing = SCAScheduler(ph, beta_e=0.05, calibration=None, model_share=1.0, mode="sizing")
    assert sizing.floors(ctx) == [0]  # round-robin's sessions are all taken anyway


@pytest.mark.parametrize("seed", range(4))
def test_rounding_meets_every_floor_the_relaxation_meets(seed):
    ctx = dataclasses.replace(context(seed), channels=2)
    met = 0
    for floor in range(1, 6):
        p = problem(ctx, beta=0.0, seed=seed, min_sessions=floor)
        try:
            r = plan(p)
        except Infeasible as e:
            assert "relaxation" in str(e), e  # only an infeasible relaxation may give up
            continue
        chosen = np.bincount(r.candidates.model[r.chosen > 0.5], minlength=3)
        assert chosen.min() >= floor, (seed, floor, chosen)
        assert np.bincount(candidates(p).model, minlength=3).min() >= floor
        met += 1
    assert met >= 2


def test_model_share_is_read_from_the_config_and_recorded_per_plan():
    config = validate_config(two_tasks("sca", warmup_rounds=2, beta_e=0.1, model_share=1.0))
    summary, _ = run_experiment(config, None)
    # 2 channels x 3 rounds / 2 models at round 2; at round 4, two rounds are left
    assert [p["floor"] for p in summary["plans"]] == [3, 2]

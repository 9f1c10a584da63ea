"""The sizing's floor on gamma (``mafl.min_iterations``). W-mafl measured the sizing cutting the
cnn's sessions on the devices where a FLOP costs most to 1-5 iterations (7% of them, the median
being 50): FedAvg's mean then leans toward the other devices' data, and FedNova's normalisation
stretches those steps up to 50x (issue 21). The floor keeps every sized session at that many
iterations or more, wherever the latency allows it (a drift peak below the floor does not
lower it)."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from fedtempo.alloc.mafl.sca import _sizing_bounds
from fedtempo.errors import ConfigError
from fedtempo.experiment.config import validate as validate_config
from tests.test_multitask import context, planned, problem, two_tasks


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_floor_holds_wherever_the_latency_allows_and_the_objective_never_increases(seed):
    p = problem(context(seed), beta=0.5, seed=seed)
    plain, pairs = planned(p)
    assert plain.gamma[pairs].min() < 25  # the sizing alone goes below the floor here
    floored = dataclasses.replace(p, min_iterations=25)
    r, pairs = planned(floored)
    gamma = r.gamma[pairs]
    g_max, _ = _sizing_bounds(floored, r.gamma, r.batch, pairs)
    assert np.all(gamma >= np.minimum(25, np.maximum(np.floor(g_max), 1)))
    assert gamma.min() == 25  # the floor binds
    for history in (r.relaxed, r.sizing):
        assert all(b <= a + 1e-9 for a, b in itertools.pairwise(history))


def test_min_iterations_reaches_the_scheduler_and_bad_settings_are_named():
    from fedtempo.experiment.build import build
    from fedtempo.sim import Recorder

    config = validate_config(two_tasks("sca", warmup_rounds=1, min_iterations=4))
    assert build(config, Recorder()).driver.algorithm.scheduler.min_iterations == 4
    with pytest.raises(ConfigError, match=r"mafl\.min_iterations: 60 > mafl\.max_iterations"):
        validate_config(two_tasks("sca", min_iterations=60, max_iterations=50))
    with pytest.raises(ConfigError, match=r"mafl\.min_iterations"):
        validate_config(two_tasks("sca", min_iterations=0))

"""The sizing's batch range (``mafl.batch_range``). The surrogate values a larger batch by
B / (a B + B_noise), nearly linear in B where B_noise is large, so with a wide range the sizing
takes the largest B it may; W-mafl's configs hold B at 8 (issue 21: measured better over 8
seeds), and the sizing then chooses the iterations alone."""

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
def test_a_one_point_range_holds_every_batch_and_the_sizing_still_chooses_gamma(seed):
    p = problem(context(seed), beta=0.5, seed=seed)
    wide, pairs = planned(p)
    assert np.any(wide.batch[pairs] != p.batch)  # with room, the sizing moves B
    held = dataclasses.replace(p, batch_range=(p.batch, p.batch))
    r, pairs = planned(held)
    _, b_max = _sizing_bounds(held, r.gamma, r.batch, pairs)
    # B is the nominal wherever the latency leaves room for it, else the most that fits
    np.testing.assert_array_equal(r.batch[pairs], np.minimum(p.batch, np.floor(b_max)))
    assert np.any(r.gamma[pairs] != p.iterations)  # gamma is still sized
    for history in (r.relaxed, r.sizing):
        assert all(b <= a + 1e-9 for a, b in itertools.pairwise(history))


def test_a_reversed_batch_range_is_named():
    with pytest.raises(ConfigError, match=r"mafl\.batch_range: need 1 <= min <= max"):
        validate_config(two_tasks("sca", batch_range=(64, 32)))

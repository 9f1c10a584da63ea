"""MA-FL's participation term with sessions counted by their work (``work_visits``): a session
sized down to a few samples is not a visit (FedNova's objective inconsistency weighs a device by
its visits times its local steps). W-mafl showed the need: at beta_E > 0 the sizing step left
4 to 14 of cnn's ~45 sessions at gamma = 1, B = 8 on the devices the term had it visit."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from fedtempo.alloc.mafl import candidates, coefficients, objective, participation, plan
from fedtempo.alloc.mafl.problem import visit_work
from fedtempo.alloc.mafl.rounding import added_values
from tests.test_multitask import context, problem, with_dissimilarity


def test_visit_work_is_the_share_of_the_nominal_samples_capped_at_one():
    assert visit_work(np.array([8.0, 80.0, 160.0, 640.0]), 160.0).tolist() == [
        0.05,
        0.5,
        1.0,
        1.0,
    ]


def test_work_visits_reduces_to_session_counts_at_the_nominal_work():
    """Every session at the nominal gamma B: J is the same with or without ``work_visits``;
    sized down to 1 x 8 samples, the same sessions leave more of the term standing."""
    ctx = context(2)
    p = with_dissimilarity(problem(ctx, beta=0.05, seed=2), 0.6)
    work = dataclasses.replace(p, work_visits=True)
    c = candidates(p)
    s = np.random.default_rng(0).random(len(c.device))
    nominal = (np.full(p.samples.shape, p.iterations), np.full(p.samples.shape, p.batch))
    assert objective(work, c, s, coefficients(work, c, *nominal)) == pytest.approx(
        objective(p, c, s, coefficients(p, c, *nominal)), rel=1e-12
    )
    tiny = (np.ones(p.samples.shape), np.full(p.samples.shape, 8))
    assert participation(coefficients(work, c, *tiny), s) > participation(
        coefficients(p, c, *tiny), s
    )


def test_rounding_gains_count_each_session_by_its_work():
    """The rounding's all-at-once J(s + e_i) equals ``objective`` with mixed session sizes."""
    ctx = context(1)
    p = dataclasses.replace(with_dissimilarity(problem(ctx, 0.05, seed=1), 0.7), work_visits=True)
    c = candidates(p)
    rng = np.random.default_rng(3)
    k = coefficients(
        p, c, rng.integers(1, 20, p.samples.shape), rng.integers(8, 32, p.samples.shape)
    )
    s = (rng.random(len(c.device)) < 0.3).astype(float)
    fast = added_values(p, c, s, k)
    for i in range(0, len(c.device), 7):
        assert fast[i] == pytest.approx(objective(p, c, s + np.eye(len(s))[i], k), rel=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_sized_sessions_keep_their_work_where_the_term_counts_it(seed):
    """At a high energy price the sizing step shrinks some sessions to under a quarter of the
    nominal samples when a session counts as a visit whatever its size; counted by work, none
    is shrunk so far, and the sizing objective still never increases."""
    ctx = context(seed)
    p = with_dissimilarity(problem(ctx, beta=1.0, seed=seed), 0.8, participation=5.0)

    def small(q):
        r = plan(q)
        assert all(b <= a + 1e-9 for a, b in itertools.pairwise(r.sizing))
        on, c = r.chosen > 0.5, r.candidates
        samples = (r.gamma * r.batch)[c.device[on], c.model[on]]
        return int((samples < 0.25 * q.iterations * q.batch).sum())

    assert small(p) >= 2
    assert small(dataclasses.replace(p, work_visits=True)) == 0


def test_work_visits_reaches_the_plans_from_the_config():
    from fedtempo.experiment.config import validate as validate_config
    from fedtempo.experiment.results import run_experiment
    from tests.test_multitask import two_tasks

    def plans(on: bool) -> list[dict]:
        config = validate_config(two_tasks("sca", warmup_rounds=2, beta_e=1.0, work_visits=on))
        assert config.mafl.work_visits is on
        return run_experiment(config, None)[0]["plans"]

    counted, worked = plans(False), plans(True)
    assert counted[0]["gaps"] == worked[0]["gaps"]  # the same probe round
    assert counted[0]["sizing"] != worked[0]["sizing"]

"""MA-FL's visit-balance term (``mafl.visit_balance``): FedAvg weighs each arrival by its data
share, so a model is trained without bias when its devices are visited equally often. The
participation term only rewards visits; W-mafl measured what that misses: the joint optimiser
gave one device of the logreg 15 of its 49 sessions and never visited 3 others (issue 21)."""

from __future__ import annotations

import dataclasses
import itertools

import cvxpy as cp
import numpy as np
import pytest

from fedtempo.alloc.mafl import balance, candidates, coefficients, objective, plan
from fedtempo.alloc.mafl.problem import _onehot, balance_change
from fedtempo.alloc.mafl.rounding import added_values
from fedtempo.alloc.mafl.sca import _balance_expression
from fedtempo.errors import ConfigError
from fedtempo.experiment.config import validate as validate_config
from tests.test_multitask import context, problem, two_tasks, with_dissimilarity

NOMINAL = (np.full((8, 3), 10), np.full((8, 3), 16))


def balanced(seed: int, weight: float, **kw) -> tuple:
    p = with_dissimilarity(problem(context(seed), beta=0.05, seed=seed), 0.6, balance=weight, **kw)
    c = candidates(p)
    return p, c, coefficients(p, c, *NOMINAL)


def test_weight_zero_reduces_to_the_objective_without_the_term():
    p, c, k = balanced(0, 0.0)
    on, _, k_on = balanced(0, 2.0)
    s = np.random.default_rng(0).random(len(c.device))
    assert balance(k, s) == 0.0
    old = dataclasses.replace(p, balance=0.0)
    assert objective(p, c, s, k) == objective(old, c, s, coefficients(old, c, *NOMINAL))
    assert objective(on, c, s, k_on) == pytest.approx(objective(p, c, s, k) + balance(k_on, s))
    assert balance(k_on, s) > 0


def test_the_term_is_zero_at_even_visits_and_charges_a_device_visited_over_and_over():
    p, c, _ = balanced(1, 1.0)
    has = p.samples[:, 0] > 0
    even = dataclasses.replace(p, recent=np.where(p.samples > 0, 2.0, 0.0))
    k_even = coefficients(even, c, *NOMINAL)
    assert balance(k_even, np.zeros(len(c.device))) == pytest.approx(0.0, abs=1e-12)
    # a session of model 0 on a device already visited more than the rest costs more than one
    # on a device visited less
    recent = np.where(p.samples > 0, 2.0, 0.0)
    first, second = np.flatnonzero(has)[:2]
    recent[first, 0], recent[second, 0] = 5.0, 0.0
    skew = coefficients(dataclasses.replace(p, recent=recent), c, *NOMINAL)
    zero = np.zeros(len(c.device))
    on_first = (c.device == first) & (c.model == 0)
    on_second = (c.device == second) & (c.model == 0)
    i, j = int(np.flatnonzero(on_first)[0]), int(np.flatnonzero(on_second)[0])
    assert (
        balance(skew, np.eye(len(zero))[i])
        > balance(skew, zero)
        > balance(skew, np.eye(len(zero))[j])
    )


def test_the_term_is_convex_along_any_line():
    _, c, k = balanced(2, 1.0)
    rng = np.random.default_rng(1)
    s, d = rng.random(len(c.device)), rng.normal(size=len(c.device))
    values = [balance(k, s + t * d) for t in np.linspace(-1, 1, 11)]
    assert np.all(np.diff(values, 2) >= -1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_the_relaxation_carries_the_same_term(seed):
    """The CVXPY expression the S-step minimises (with its lifted per-model means) equals
    ``balance`` at any s, and is convex."""
    _, c, k = balanced(seed, 1.5)
    counted = _onehot(k.pair, len(k.visits))
    s = cp.Variable(len(c.device))
    expr, held = _balance_expression(k, counted, s)
    assert isinstance(expr, cp.Expression) and expr.is_convex()
    for trial in range(3):
        at = np.random.default_rng(trial).random(len(c.device))
        cp.Problem(cp.Minimize(expr), [*held, s == at]).solve(solver=cp.CLARABEL)
        assert float(expr.value) == pytest.approx(balance(k, at), rel=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_rounding_gains_include_the_exact_change_of_the_term(seed):
    p, c, k = balanced(seed, 2.0, recent=np.random.default_rng(seed).integers(0, 4, (8, 3)))
    s = (np.random.default_rng(seed).random(len(c.device)) < 0.25).astype(float)
    fast = added_values(p, c, s, k)
    change = balance_change(k, s, k.pair, k.work)
    for i in range(len(c.device)):
        t = s + np.eye(len(s))[i]
        assert fast[i] == pytest.approx(objective(p, c, t, k), rel=1e-12)
        assert change[i] == pytest.approx(balance(k, t) - balance(k, s), rel=1e-9, abs=1e-12)


def spread(p, r) -> float:
    """Sum over models of the variance of the plan's visits (recent + planned) across the
    devices with data."""
    on = r.chosen > 0.5
    visits = np.zeros(p.samples.shape) if p.recent is None else p.recent.astype(float).copy()
    np.add.at(visits, (r.candidates.device[on], r.candidates.model[on]), 1.0)
    return sum(float(np.var(visits[p.samples[:, m] > 0, m])) for m in range(p.samples.shape[1]))


@pytest.mark.parametrize("seed", range(4))
def test_the_plan_spreads_its_visits_and_its_objective_never_increases(seed):
    """Given a skewed past (one device of each model visited 6 times), the plan with the term
    leaves the visits more even than the plan without it, and every history stays monotone."""
    recent = np.zeros((8, 3))
    recent[seed % 8, :] = 6.0
    p, _, _ = balanced(seed, 0.0, recent=recent, participation=0.0)
    plain = plan(p)
    weighted = plan(dataclasses.replace(p, balance=5.0))
    for history in (weighted.relaxed, weighted.sizing):
        assert all(b <= a + 1e-9 for a, b in itertools.pairwise(history))
    assert spread(p, weighted) < spread(p, plain)


def test_visit_balance_reaches_the_scheduler_and_bad_settings_are_named():
    from fedtempo.experiment.build import build
    from fedtempo.sim import Recorder

    def weight(**mafl) -> float:
        config = validate_config(two_tasks("sca", warmup_rounds=1, **mafl))
        return float(build(config, Recorder()).driver.algorithm.scheduler.balance)

    assert weight(visit_balance=2.5) == 2.5
    assert weight() == 0.3  # the default
    assert weight(work_visits=True) == 0.0  # the default gives way to work_visits
    with pytest.raises(ConfigError, match=r"mafl\.visit_balance: counts whole sessions"):
        validate_config(two_tasks("sca", visit_balance=1.0, work_visits=True))
    with pytest.raises(ConfigError, match=r"mafl\.visit_balance"):
        validate_config(two_tasks("sca", visit_balance=-1.0))

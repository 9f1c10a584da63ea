"""MA-FL surrogate calibration: learning curves fitted along the run, the drift horizon floor."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from fedtempo.alloc.mafl import plan
from fedtempo.multitask.calibration import Calibration, LearningCurve, fit_curve
from fedtempo.multitask.estimate import curved_noise_scale
from fedtempo.multitask.optimised import SCAScheduler
from tests.test_multitask import context, planning_setup, problem


def test_a_learning_curve_is_recovered_and_continues_in_psis_form():
    truth = LearningCurve(floor=0.15, scale=1.5, rate=0.2)
    q = np.array([0.0, 2.0, 5.0, 9.0, 14.0, 20.0, 30.0])
    fitted = fit_curve(q, np.array([truth(x) for x in q]))
    assert fitted is not None
    assert fitted.rate == pytest.approx(truth.rate, rel=0.15)
    assert fitted.floor == pytest.approx(truth.floor, abs=0.05)
    assert max(abs(fitted(x) - truth(x)) for x in q) < 0.02  # rate on a grid (12% apart)
    # from Q_now on, the curve above its floor is Psi = G' / (1 + k' P)
    gap, rate = truth.ahead(9.0)
    for extra in (0.0, 1.0, 7.5, 40.0):
        assert truth(9.0 + extra) - truth.floor == pytest.approx(gap / (1 + rate * extra))


def test_few_points_fix_the_floor_at_zero_and_one_point_gives_no_curve():
    assert fit_curve(np.array([0.0]), np.array([1.0])) is None
    two = fit_curve(np.array([0.0, 4.0]), np.array([1.0, 0.5]))
    assert two is not None and two.floor == 0.0
    assert two(0.0) == pytest.approx(1.0, rel=0.02) and two(4.0) == pytest.approx(0.5, rel=0.05)
    # the floor is fitted below the lowest loss measured, never at or above it
    flat = fit_curve(np.array([0.0, 3.0, 6.0, 9.0]), np.array([1.0, 0.9, 0.9, 0.9]))
    assert flat is not None and 0.0 <= flat.floor < 0.9


def test_calibration_books_committed_sessions_and_replaces_gap_and_rate():
    ctx = context(1)
    p = problem(ctx, beta=0.0, seed=1)
    cal = Calibration()
    first = cal.calibrate(ctx.first_round, p.terms)
    assert first == p.terms  # one measurement: the probe's own terms
    result = plan(p)
    cal.credit(ctx.first_round, p, result.candidates, result)
    starts = result.candidates.start[result.chosen > 0.5] + ctx.first_round
    uploads = result.candidates.upload[result.chosen > 0.5] + ctx.first_round
    nxt = ctx.first_round + 2
    # committed = started before the next plan; delivered = uploaded before it
    committed = [(s, u) for s, u in zip(starts, uploads, strict=True) if s < nxt]
    lowered = [dataclasses.replace(t, gap=t.gap * 0.7) for t in p.terms]
    second = cal.calibrate(nxt, tuple(lowered))
    assert {x.start for x in cal.booked} <= {int(s) for s, _ in committed}
    assert len(cal.booked) == len(committed)
    for m, (old, new) in enumerate(zip(p.terms, second, strict=True)):
        q = cal.delivered(m, nxt)
        assert q == pytest.approx(
            sum(x.progress for x in cal.booked if x.model == m and x.upload < nxt)
        )
        if q > 0:  # two points, floor 0: the drop fixes the curve, G' is the fitted loss now
            assert new.gap == pytest.approx(0.7 * old.gap, rel=0.05)
            assert new.rate > 0 and new.spread == old.spread


def test_the_drift_horizon_is_planned_at_least_at_its_floor_and_calibration_is_recorded():
    ctx, ph = planning_setup(3)
    low = [t.local_steps for t in ctx.terms]
    assert min(low) < 30
    floored = SCAScheduler(ph, beta_e=0.01, drift_horizon_min=30.0)
    assert [t.local_steps for t in floored.problem(ctx).terms] == [max(g, 30.0) for g in low]
    plain = SCAScheduler(ph, beta_e=0.01)
    assert [t.local_steps for t in plain.problem(ctx).terms] == low  # 0: the probe's own
    # more worth per local step: the sizing gives sessions at least as many iterations
    a, b = plain(ctx), floored(ctx)
    assert np.mean([x.iterations for x in b.sessions()]) > np.mean(
        [x.iterations for x in a.sessions()]
    )
    # each plan records the G and k it used; the first plan's are the probe's own
    assert plain.log[0].gaps == [t.gap for t in ctx.terms]
    assert plain.log[0].rates == [t.rate for t in ctx.terms]


def test_the_curved_noise_scale_matches_an_explicit_hessian():
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    x, y = torch.randn(16, 3), torch.randint(0, 4, (16,))
    lr = 0.3
    params = [p.detach() for p in model.parameters()]
    sizes = [p.numel() for p in params]

    def loss_of(flat: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        w, b = torch.split(flat, sizes)
        out = xs @ w.reshape(4, 3).T + b
        return nn.functional.cross_entropy(out, ys)

    flat = torch.cat([p.reshape(-1) for p in params])
    hess = torch.autograd.functional.hessian(lambda v: loss_of(v, x, y), flat)
    each = torch.stack(
        [
            torch.autograd.functional.jacobian(
                lambda v, i=i: loss_of(v, x[i : i + 1], y[i : i + 1]), flat
            )
            for i in range(16)
        ]
    )
    g = each.mean(dim=0)
    noise = each - g
    spread = float(torch.einsum("ni,ij,nj->n", noise, hess, noise).mean())
    expect = lr / 2 * spread / (float(g @ g) - lr / 2 * float(g @ hess @ g))
    assert curved_noise_scale(model, x, y, lr) == pytest.approx(expect, rel=1e-4)
    # a learning rate at which the full step no longer lowers the loss: the largest scale
    assert curved_noise_scale(model, x, y, 1e4) == 1e6


def test_the_curvature_batch_noise_reaches_the_plans_from_the_config():
    from fedtempo.experiment.config import validate as validate_config
    from fedtempo.experiment.results import run_experiment
    from tests.test_multitask import two_tasks

    def plans(noise: str) -> list[dict]:
        config = validate_config(two_tasks("sca", warmup_rounds=2, batch_noise=noise))
        return run_experiment(config, None)[0]["plans"]

    gradient, curvature = plans("gradient"), plans("curvature")
    # the first plan has the same G and k (the probe round's), but sizes with another B_noise
    assert gradient[0]["gaps"] == curvature[0]["gaps"]
    assert gradient[0]["sizing"] != curvature[0]["sizing"]

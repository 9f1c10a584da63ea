"""The probe round's held-out drift (issue 21, ``mafl.drift_probe = "held-out"``, a study).
The probe round trains the devices with the most data and scores their mean model on a pooled
sample, mostly those same devices' data, where more local steps keep lowering the loss. In
W-mafl the Synthetic logistic regression's loss on the other devices rises from the first step
while the pooled one falls, and round-robin's runs lose 6.6 points of its accuracy from 5 to
100 iterations; the MNIST models' held-out loss falls nearly as far as the pooled one. The
study scores the round's model on the devices that did not train too, and where less than a
quarter of the gain carries over there, fits the drift decay to that curve. (Measured over 8
seeds it loses to the pooled probe: the logreg is then sized to one iteration, too few.)"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from fedtempo.alloc.mafl import drift_peak
from fedtempo.client.local import LocalSpec
from fedtempo.errors import ConfigError
from fedtempo.experiment.config import validate as validate_config
from fedtempo.multitask.estimate import (
    TRANSFER_MIN,
    RoundCurve,
    carried_over,
    fit_drift,
    probe,
    probe_round,
    terms_from,
)
from fedtempo.params import flatten
from tests.test_multitask import context, planned, problem, two_tasks

STEPS = np.array([0, 1, 2, 4, 8, 16, 32, 64], dtype=float)


def _curve(local: float, decay: float, gap: float = 1.2, rate: float = 0.05) -> np.ndarray:
    h = local * np.log1p(STEPS / local) - decay * STEPS
    return gap / (1 + rate * h)


def test_drift_is_fitted_to_the_held_out_curve_at_the_planning_horizon():
    # a held-out loss that keeps falling: no peak in sight (the grid's rounding of the rate
    # may leave a decay of a few thousandths)
    assert float(drift_peak(20.0, fit_drift(STEPS, _curve(20.0, 0.0), 20.0))) > 640
    # one that turns after some steps: the decay puts the peak where it turns
    turning = _curve(20.0, 0.5)
    assert 10 <= STEPS[np.argmin(turning)] <= 32  # the data's own turn: 20 steps
    delta = fit_drift(STEPS, turning, 20.0)
    assert float(drift_peak(20.0, delta)) == pytest.approx(20.0, rel=0.3)
    # one that never falls below its start: the factor falls from the first step
    rising = 2.2 + 0.002 * STEPS
    delta = fit_drift(STEPS, rising, 20.0)
    assert delta >= 1.0 and float(drift_peak(20.0, delta)) <= 0


def test_carried_over_is_the_held_out_drop_over_the_pooled_drop():
    pooled = _curve(8.0, 0.0)
    same = RoundCurve(STEPS, pooled, 0.5, 8, pooled.copy())
    assert carried_over(same) == pytest.approx(1.0)
    half = 1.2 - 0.5 * (1.2 - pooled)
    assert carried_over(RoundCurve(STEPS, pooled, 0.5, 8, half)) == pytest.approx(0.5)
    rising = 1.2 + 0.01 * STEPS
    assert carried_over(RoundCurve(STEPS, pooled, 0.5, 8, rising)) == 0.0
    assert carried_over(RoundCurve(STEPS, pooled, 0.5, 8)) == 1.0  # not measured
    flat = np.full(len(STEPS), 1.2)
    assert carried_over(RoundCurve(STEPS, flat, 0.5, 8, rising)) == 1.0  # nothing to carry


def _devices(conflicting: bool, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Four devices of 2-d points; the label is the sign of x0, flipped on devices 2 and 3
    where ``conflicting`` (each device's rule is the opposite of another's)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for n in range(4):
        x = torch.randn(96, 2, generator=gen)
        y = (x[:, 0] > 0).long()
        if conflicting and n >= 2:
            y = 1 - y
        out.append((x, y))
    return out


def _measure(conflicting: bool) -> tuple[RoundCurve, RoundCurve]:
    """The probe round of devices 0 and 1 from the zero model, with the held-out sample of
    devices 2 and 3 (and, to compare, without it)."""
    model = nn.Linear(2, 2)
    params = torch.zeros_like(flatten(model))
    data = _devices(conflicting)
    trained, held = data[:2], data[2:]
    held_out = (torch.cat([x for x, _ in held]), torch.cat([y for _, y in held]))
    # the pooled sample: as in W-mafl, mostly the round's own (largest) devices' data
    evaluation = (torch.cat([x for x, _ in trained]), torch.cat([y for _, y in trained]))
    spec = LocalSpec(batch_size=8, lr=0.5)
    shares = np.array([0.3, 0.3])

    def gens() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(10 + i) for i in range(2)]

    with_held = probe_round(
        model, params, trained, shares, evaluation, spec, gens(), held_out=held_out
    )
    without = probe_round(model, params, trained, shares, evaluation, spec, gens())
    return with_held, without


@pytest.mark.parametrize("conflicting", [False, True])
def test_the_probe_round_scores_its_model_on_the_devices_that_did_not_train(conflicting):
    with_held, without = _measure(conflicting)
    assert without.held_out is None
    assert np.array_equal(with_held.loss, without.loss)  # the held-out sample changes nothing
    assert with_held.held_out is not None and len(with_held.held_out) == len(with_held.loss)
    assert with_held.loss[-1] < with_held.loss[0]  # the pooled loss falls either way
    if conflicting:  # the round's steps fit its devices' rule, the opposite of the others'
        assert with_held.held_out[-1] > with_held.held_out[0]
        assert carried_over(with_held) < TRANSFER_MIN
    else:
        assert with_held.held_out[-1] < with_held.held_out[0]
        assert carried_over(with_held) >= TRANSFER_MIN


@pytest.mark.parametrize("conflicting", [False, True])
def test_terms_take_the_held_out_drift_only_where_the_gain_does_not_carry_over(conflicting):
    with_held, without = _measure(conflicting)
    data = _devices(conflicting)
    model = nn.Linear(2, 2)
    params = torch.zeros_like(flatten(model))
    measured = probe(model, params, None, data, np.full(4, 0.25))
    pooled = terms_from(measured, without, 96.0, local_steps_min=20.0)
    held = terms_from(measured, with_held, 96.0, local_steps_min=20.0)
    assert held.local_steps == pooled.local_steps >= 20.0
    # everything but the decay is the pooled fit's either way
    assert dataclasses.replace(held, drift_decay=pooled.drift_decay) == pooled
    if conflicting:
        assert held.drift_decay == fit_drift(STEPS, with_held.held_out, held.local_steps)
        assert float(drift_peak(held.local_steps, held.drift_decay)) < 1.0
        assert held.drift_decay != pooled.drift_decay
    else:  # reduces to the pooled probe
        assert held.drift_decay == pooled.drift_decay


def test_a_model_whose_steps_do_not_carry_over_is_sized_to_one_iteration():
    p = problem(context(0), beta=0.0, seed=0, max_iterations=60, min_sessions=2)
    terms = list(p.terms)
    terms[0] = dataclasses.replace(terms[0], local_steps=20.0, drift_decay=2.0)
    r, (n, m) = planned(dataclasses.replace(p, terms=tuple(terms)))
    assert (m == 0).any() and (m != 0).any()
    assert np.all(r.gamma[n[m == 0], 0] == 1)
    assert r.gamma[n[m != 0], m[m != 0]].max() > 1  # the others are sized as before


def test_drift_probe_reaches_the_prober_and_a_bad_value_is_named():
    from fedtempo.experiment.build import build
    from fedtempo.sim import Recorder

    for value, held in (("held-out", True), ("pooled", False)):
        config = validate_config(two_tasks("sca", warmup_rounds=1, drift_probe=value))
        prober = build(config, Recorder()).driver.algorithm.measure
        assert prober.settings.held_out is held
        assert prober.settings.local_steps_min == config.mafl.iterations
    with pytest.raises(ConfigError, match=r"mafl\.drift_probe"):
        validate_config(two_tasks("sca", drift_probe="sideways"))


def test_a_drift_peak_below_the_floor_does_not_lower_it():
    p = problem(context(0), beta=0.0, seed=0, max_iterations=60, min_sessions=2, min_iterations=5)
    terms = list(p.terms)
    terms[0] = dataclasses.replace(terms[0], local_steps=20.0, drift_decay=2.0)  # peak < 1
    r, (n, m) = planned(dataclasses.replace(p, terms=tuple(terms)))
    assert (m == 0).any()
    # the floor, wherever the latency allows it
    seconds = p.compute_budget_s()[n, m] * p.speed[n] / p.train_flops[m] / r.batch[n, m]
    fits = (m == 0) & (seconds >= 5)
    assert fits.any() and np.all(r.gamma[n[fits], 0] == 5)


def test_sessions_past_their_drift_peak_are_booked_as_no_progress():
    """Floored above a peak under one step, the model's sessions have h < 0; the calibration
    books them as no progress (a negative Q made k' negative, and the S-step not convex, on
    W-mafl base seed 3 with the held-out probe and a floor of 5)."""
    from fedtempo.multitask.calibration import session_progress

    p = problem(context(0), beta=0.0, seed=0, max_iterations=60, min_sessions=2, min_iterations=5)
    terms = list(p.terms)
    terms[0] = dataclasses.replace(terms[0], local_steps=20.0, drift_decay=2.0)
    p = dataclasses.replace(p, terms=tuple(terms))
    r, (n, m) = planned(p)
    assert (p.steps(r.gamma.astype(float), r.batch.astype(float))[n[m == 0], 0] < 0).all()
    booked = session_progress(p, r.candidates, r)
    picked = r.chosen > 0.5
    assert (booked >= 0).all()
    assert (booked[picked & (r.candidates.model == 0)] == 0).all()
    assert (booked[picked & (r.candidates.model != 0)] > 0).all()

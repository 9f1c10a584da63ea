"""FedNova's step normalisation for MA-FL's rounds (``mafl.normalise_steps``). The optimiser's
sizing gives each device its own gamma, and FedAvg's mean over a round's arrivals then weighs a
device by its data share times its local steps: the model is pulled toward the devices sized to
more iterations (Wang et al. 2020's objective inconsistency). The normalised mean weighs by data
share alone and keeps the mean step length; with equal gamma it is FedAvg's mean, bit for bit."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtempo.aggregation import sample_weighted_delta, step_normalised_delta
from fedtempo.client.local import Update
from fedtempo.experiment.config import validate as validate_config
from fedtempo.experiment.results import run_experiment
from tests.test_multitask import two_tasks

floats = st.floats(-100, 100, allow_nan=False, width=32)


@st.composite
def updates(draw: st.DrawFn, equal_steps: bool) -> list[Update]:
    n, dim = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    steps = draw(st.integers(1, 50))
    return [
        Update(
            c,
            0,
            0,
            torch.tensor(draw(st.lists(floats, min_size=dim, max_size=dim))),
            draw(st.integers(1, 1000)),
            steps if equal_steps else draw(st.integers(1, 50)),
            0.0,
        )
        for c in range(n)
    ]


@given(updates(equal_steps=True))
@settings(max_examples=100)
def test_equal_steps_give_fedavg_bit_for_bit(us: list[Update]) -> None:
    assert torch.equal(step_normalised_delta(us), sample_weighted_delta(us))


@given(updates(equal_steps=False), st.randoms())
@settings(max_examples=100)
def test_the_normalised_mean_does_not_depend_on_arrival_order(us: list[Update], rnd) -> None:  # type: ignore[no-untyped-def]
    shuffled = list(us)
    rnd.shuffle(shuffled)
    assert torch.equal(step_normalised_delta(us), step_normalised_delta(shuffled))


@given(st.lists(st.tuples(st.integers(1, 1000), st.integers(1, 50)), min_size=1, max_size=6))
def test_devices_with_one_gradient_each_weigh_by_data_share_alone(rows) -> None:  # type: ignore[no-untyped-def]
    """Device i takes tau_i steps along its own constant gradient g_i, so Delta_i = tau_i g_i:
    FedAvg's mean is sum p_i tau_i g_i (biased toward the long sessions), the normalised one
    tau_eff sum p_i g_i, the data-weighted direction at the mean step length."""
    grads = torch.eye(len(rows), dtype=torch.float64)
    us = [Update(i, 0, 0, tau * grads[i], n, tau, 0.0) for i, (n, tau) in enumerate(rows)]
    share = torch.tensor([n for n, _ in rows], dtype=torch.float64)
    share /= share.sum()
    tau_eff = float(sum(p * tau for p, (_, tau) in zip(share.tolist(), rows, strict=True)))
    got = step_normalised_delta(us).double()  # float32 out (summed in float64)
    assert torch.allclose(got, tau_eff * share, rtol=1e-6, atol=1e-6)
    direction = got / got.sum()  # each device's share of the step: its data share
    assert torch.allclose(direction, share, rtol=1e-5, atol=1e-6)


def test_an_update_with_data_and_no_steps_is_named() -> None:
    us = [Update(0, 0, 0, torch.ones(2), 5, 0, 0.0), Update(1, 0, 0, torch.ones(2), 5, 3, 0.0)]
    with pytest.raises(ValueError, match="an update with data reports 0 steps"):
        step_normalised_delta(us)


def _run(scheduler: str, **mafl) -> tuple[dict, object]:
    config = validate_config(two_tasks(scheduler, warmup_rounds=2, beta_e=0.1, **mafl))
    return run_experiment(config, None)


def test_round_robin_runs_are_bit_identical_with_and_without_normalisation() -> None:
    """Every round-robin session trains the nominal gamma: the same run either way."""
    _, plain = _run("round-robin")
    _, normalised = _run("round-robin", normalise_steps=True)
    for m in (0, 1):
        assert torch.equal(plain.final_params[m], normalised.final_params[m])


def test_sized_sessions_of_unequal_gamma_are_normalised() -> None:
    """The sizing half gives the devices unequal gamma, so the switch changes the models (equal
    gamma would leave them bit-identical, as above)."""
    _, plain = _run("sca-sizing")
    _, normalised = _run("sca-sizing", normalise_steps=True)
    assert any(not torch.equal(plain.final_params[m], normalised.final_params[m]) for m in (0, 1))

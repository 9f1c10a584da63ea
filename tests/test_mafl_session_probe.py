"""The multi-round drift probe (issue 21, ``mafl.drift_probe = "sessions"``, a study).
One probe round cannot say how many local steps a model should take per session: that is a
question about many sessions, each pulling the model toward its own device's data. The probe
replays as many sessions as the run gives a model, one after another from the current model,
at 1 to 64 local steps each, fits the surrogate's own form to the losses, and where that fit
keeps a decay, gives the model the drift peak it implies."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import fedtempo.multitask.probes as probes_module
from fedtempo.alloc.mafl import drift_peak
from fedtempo.client.local import LocalSpec
from fedtempo.experiment.config import validate as validate_config
from fedtempo.multitask.sessions import (
    SESSION_GRID,
    replay_peak,
    session_losses,
    session_order,
    turn_decay,
)
from fedtempo.params import flatten
from tests.test_mafl_drift_probe import _devices
from tests.test_multitask import two_tasks


def test_every_device_comes_once_per_pass():
    order = session_order(5, 12, np.random.default_rng(0))
    assert len(order) == 12
    assert sorted(order[:5]) == sorted(order[5:10]) == list(range(5))
    assert set(order[10:]) <= set(range(5)) and len(set(order[10:])) == 2
    again = session_order(5, 12, np.random.default_rng(0))
    assert np.array_equal(order, again)


GRID = np.array([0, *SESSION_GRID], dtype=float)


def _form(local: float, decay: float, gap: float = 1.0, rate: float = 0.5) -> np.ndarray:
    """The surrogate's loss after the replayed sessions at each gamma of ``[0, *grid]``."""
    h = local * np.log1p(GRID / local) - decay * GRID
    return gap / (1 + rate * h)


def test_the_peak_is_read_off_the_surrogate_fitted_to_the_replays():
    # more local steps keep paying: no peak
    assert replay_peak(SESSION_GRID, _form(4.0, 0.0)) is None
    # a curve that turns: the fit recovers its peak, gamma0 (1 / delta - 1)
    for local, decay in ((1.0, 0.04), (4.0, 0.1)):
        truth = float(drift_peak(local, decay))
        assert replay_peak(SESSION_GRID, _form(local, decay)) == pytest.approx(truth, rel=0.35)
    assert replay_peak(SESSION_GRID, np.array([0.5, np.nan, 0.4, 0.4, 0.4, 0.4, 0.4, 0.6])) is None


@pytest.mark.parametrize("turn", [1.0, 5.0, 32.0])
@pytest.mark.parametrize("local", [1.0, 20.0])
def test_the_turn_decay_puts_the_drift_peak_at_the_turn(turn, local):
    assert float(drift_peak(local, turn_decay(turn, local))) == pytest.approx(turn)


def _replay(conflicting: bool) -> np.ndarray:
    """Two passes over the four devices of ``_devices`` from the zero model, scored on all of
    them over the last pass."""
    model = nn.Linear(2, 2)
    params = torch.zeros_like(flatten(model))
    data = _devices(conflicting)
    evaluation = (torch.cat([x for x, _ in data]), torch.cat([y for _, y in data]))
    order = session_order(4, 8, np.random.default_rng(1)).tolist()
    return session_losses(
        model,
        params,
        lambda n: data[n],
        order,
        evaluation,
        LocalSpec(batch_size=8, lr=0.5),
        lambda gamma: torch.Generator().manual_seed(gamma),
        tail=4,
    )


def test_sessions_that_pull_toward_opposite_rules_turn_and_shared_ones_do_not():
    shared, conflicting = _replay(False), _replay(True)
    assert len(shared) == len(SESSION_GRID) + 1  # the start first
    # one rule for all: more local steps per session keep paying
    assert shared[-1] < shared[1] < shared[0] and replay_peak(SESSION_GRID, shared) is None
    # opposite rules: each long session swings the model to its own device's rule and away
    # from the other half's, so the population's loss rises with the session's length
    assert conflicting[-1] > conflicting[1]
    peak = replay_peak(SESSION_GRID, conflicting)
    assert peak is not None and peak <= 4
    assert np.array_equal(conflicting, _replay(True))  # deterministic


def _same(a, b) -> bool:
    """Two TaskTerms field for field (their per-device arrays by value)."""
    return all(
        np.array_equal(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
    )


def _probers():
    from fedtempo.experiment.build import build
    from fedtempo.sim import Recorder

    out = {}
    for value in ("pooled", "sessions"):
        config = validate_config(two_tasks("sca", warmup_rounds=1, drift_probe=value))
        built = build(config, Recorder())
        params = {t.task: t.model.params for t in built.driver.tasks}
        out[value] = (built.driver.algorithm.measure, params, config)
    return out


def test_the_turn_sets_the_drift_decay_once_and_nothing_else(monkeypatch):
    probers = _probers()
    pooled, params, _ = probers["pooled"]
    replayed, _, config = probers["sessions"]
    assert pooled.settings.sessions == 0
    mc = config.mafl
    assert replayed.settings.sessions == mc.rounds * mc.channels // 2
    previous = {m: None for m in params}
    base = pooled(params, previous)
    # the replays turn for one model and keep falling for the other here
    turns = {0: replay_peak(SESSION_GRID, _form(1.0, 0.04)), 1: None}
    assert turns[0] is not None
    calls = []

    def replay(model, params_, data, order, *args, **kwargs):
        calls.append(len(order))
        return _form(1.0, 0.04) if not calls[1:] else _form(4.0, 0.0)

    monkeypatch.setattr(probes_module, "session_losses", replay)
    terms = replayed(params, previous)
    assert calls == [replayed.settings.sessions] * 2
    assert replayed.peaks == turns
    assert pooled.peaks == {}
    for m, (mine, theirs) in enumerate(zip(terms, base, strict=True)):
        if turns[m] is None:
            assert _same(mine, theirs)
        else:
            decay = max(theirs.drift_decay, turn_decay(turns[m], theirs.local_steps))
            assert _same(mine, dataclasses.replace(theirs, drift_decay=decay))
            assert mine.drift_decay != theirs.drift_decay
            assert float(drift_peak(mine.local_steps, mine.drift_decay)) <= turns[m] + 1e-9
    replayed(params, previous)
    assert len(calls) == 2  # measured once, at the first measurement


def test_the_replayed_sessions_are_the_runs_sessions_per_model_and_at_least_one():
    from fedtempo.experiment.multibuild import replayed_sessions

    mc = validate_config(two_tasks("sca", warmup_rounds=1, drift_probe="sessions")).mafl
    assert replayed_sessions(mc, 2) == mc.rounds * mc.channels // 2 > 1
    few = mc.model_copy(update={"rounds": 3, "channels": 1})
    assert replayed_sessions(few, 2) == 1  # 3 uploads over 2 models
    assert replayed_sessions(few, 5) == 1  # fewer uploads than models: still one
    assert replayed_sessions(mc.model_copy(update={"drift_probe": "pooled"}), 2) == 0

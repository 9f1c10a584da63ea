"""The multi-round drift probe (``mafl.drift_probe = "sessions"``; a study).

The probe round (``fedtempo.multitask.estimate.probe_round``) sees one round: a few devices
train from the same model and their mean is scored. How many local steps a model should take
per session is a question about many rounds: a device's long session pulls the model toward its
own data, the next device's session pulls it back toward its own, and where the devices'
optima differ (the Synthetic logistic regression of W-mafl) the model ends up worse after
many long sessions than after many short ones, while one round's curve keeps falling. In
MA-FL's runs a model gets one or two arrivals per round, each applied nearly in full.

``session_losses`` replays that on the server: from the current model, devices train one after
another (a fresh cyclic order of them per pass), each session of gamma local steps starting
from the model the previous one left, for as many sessions as the run gives the model; the
pooled evaluation loss over the last pass, for each gamma on a grid. ``replay_peak`` fits the
surrogate's form to that curve and reads the gamma after which longer sessions stop paying: the
model's drift peak, which the prober then gives its terms (``turn_decay``). Like the other
probes it stands for what a deployment would learn from its warm-up and is not charged to the
devices.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from fedtempo.alloc.mafl import drift_peak
from fedtempo.client.local import LocalSpec, train_local
from fedtempo.multitask.estimate import DECAY_GRID, LOCAL_GRID, Data, evaluation_loss, fit_curve

SESSION_GRID = (1, 2, 4, 8, 16, 32, 64)


def session_order(devices: int, sessions: int, rng: np.random.Generator) -> np.ndarray:
    """``sessions`` device indices in [0, devices): consecutive fresh permutations, so every
    device comes once per pass, as in round-robin."""
    passes = -(-sessions // devices)
    return np.concatenate([rng.permutation(devices) for _ in range(passes)])[:sessions]


def session_losses(
    model: nn.Module,
    params: torch.Tensor,
    data: Callable[[int], Data],
    order: Sequence[int],
    evaluation: Data,
    spec: LocalSpec,
    generator: Callable[[int], torch.Generator],
    steps: Sequence[int] = SESSION_GRID,
    tail: int = 1,
) -> np.ndarray:
    """For each gamma in ``steps``: from ``params``, the devices ``order`` (``data(n)``: their
    training data) train one after another, gamma local steps each at ``spec``'s lr and batch,
    each from the model the previous one left; the loss on ``evaluation`` after each of the last
    ``tail`` sessions, averaged (the model leans toward whichever device came last, so one
    score after the last session reads mostly that device; ``tail`` = a pass over the devices
    averages that out). ``generator(gamma)``: the sampling stream of that replay (one per
    gamma, so the replays do not depend on each other). The first entry is the loss before
    any session (gamma = 0), so the result lines up with ``[0, *steps]``."""
    out = [evaluation_loss(model, params, evaluation)]
    tail = max(1, min(tail, len(order)))
    for gamma in steps:
        run = dataclasses.replace(spec, iterations=int(gamma))
        gen, current, scores = generator(int(gamma)), params.clone(), []
        for i, n in enumerate(order):
            x, y = data(int(n))
            delta, _, _ = train_local(model, current, x, y, run, gen)
            current = current + delta
            if i >= len(order) - tail:
                scores.append(evaluation_loss(model, current, evaluation))
        out.append(float(np.mean(scores)))
    return np.array(out)


def replay_peak(steps: Sequence[int], losses: np.ndarray) -> float | None:
    """The drift peak the replays show: the surrogate's own form for the loss after the replayed
    sessions, G - G / (1 + k h(gamma)), h = gamma0 log(1 + gamma / gamma0) - delta gamma (the
    sessions' count folded into k), fitted by least squares on grids (``estimate.fit_curve``,
    which keeps a decay only where it cuts the error by a fifth); the gamma at which h peaks,
    or None where the fit keeps no decay (more local steps keep paying). ``losses``: the loss
    at ``[0, *steps]`` (``session_losses``). In W-mafl base the logistic regression peaks at
    19 to 29 steps on each of 8 seeds, the MNIST models not at all (one mlp at 79)."""
    losses = np.asarray(losses, dtype=float)
    if not np.isfinite(losses).all():
        return None
    grid = np.array([0, *steps], dtype=float)
    _, local, decay = fit_curve((grid, losses), 1.0, LOCAL_GRID, DECAY_GRID)
    if decay <= 0:
        return None
    return max(float(drift_peak(local, decay)), 0.0)


def turn_decay(turn: float, local_steps: float) -> float:
    """The drift decay delta that puts the drift factor's peak (``drift_peak``: gamma0 (1 /
    delta - 1)) at ``turn`` for the horizon gamma0 = ``local_steps``."""
    return float(local_steps / (turn + local_steps))

"""Calibrating the MA-FL surrogate on what the run's own plans did (issue 21).

One probe round at each plan gives a rate k that swings 20x from plan to plan, and a gap G that
is the whole loss, irreducible part included: Psi = G / (1 + k P) then predicts a 1.6x to 4.6x
larger loss drop than the next plan measures (``benchmarks/mafl_surrogate_check.py``). Here each
model's loss is instead followed along the run, against the progress Q its committed sessions
have delivered (the surrogate's own effective server steps, summed by upload round), and fitted
by the learning curve

    L(Q) = L_inf + A / (1 + k Q)

(a floor L_inf, the O(1/T) of SGD above it). From Q_now on, the curve is again of Psi's form:
L(Q_now + P) - L_inf = G' / (1 + k' P) with G' = A / (1 + k Q_now) and k' = k / (1 + k Q_now),
so the solver is unchanged; only G and k are replaced. With two measurements the floor is taken
as 0 (one drop fixes A and k); from three on it is fitted too, up to half the lowest loss
measured. One measurement: the probe's own G and k stand.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from fedtempo.alloc.mafl import Candidates, MaflProblem, Plan, TaskTerms, coefficients
from fedtempo.alloc.mafl.problem import arrival_weights

CURVE_RATES = np.geomspace(1e-3, 1e1, 81)
FLOOR_STEPS = 60
FLOOR_SHARE = 0.5  # the floor is fitted within [0, FLOOR_SHARE x the lowest loss measured]


@dataclass(frozen=True)
class LearningCurve:
    """L(Q) = floor + scale / (1 + rate Q)."""

    floor: float
    scale: float
    rate: float

    def __call__(self, progress: float) -> float:
        return self.floor + self.scale / (1 + self.rate * progress)

    def ahead(self, progress: float) -> tuple[float, float]:
        """(G', k') of Psi = G' / (1 + k' P) for the progress P still to come after ``progress``."""
        at = 1 + self.rate * progress
        return self.scale / at, self.rate / at


def fit_curve(progress: np.ndarray, loss: np.ndarray) -> LearningCurve | None:
    """Least squares (rate and floor on grids, the scale exactly) of ``loss`` against
    ``progress``; None below two points. The floor is fitted from three points on, within
    [0, ``FLOOR_SHARE`` x the lowest loss] (a floor fitted right under the lowest loss would
    call a model done on three noisy points, and a model left untrained stays at its loss,
    which would confirm it); with two it is 0."""
    q, y = np.asarray(progress, dtype=float), np.asarray(loss, dtype=float)
    if len(q) < 2:
        return None
    lowest = float(y.min())
    floors = (
        np.linspace(0.0, FLOOR_SHARE * lowest, FLOOR_STEPS) if len(q) >= 3 and lowest > 0 else [0.0]
    )
    x = 1 / (1 + CURVE_RATES[:, None] * q[None, :])  # rates x points
    best = (np.inf, LearningCurve(0.0, max(float(y[0]), 0.0), float(CURVE_RATES[0])))
    for floor in floors:
        above = y - floor
        scale = np.maximum((x * above).sum(axis=1) / (x * x).sum(axis=1), 0.0)
        err = ((scale[:, None] * x - above) ** 2).sum(axis=1)
        i = int(np.argmin(err))
        if err[i] < best[0] - 1e-15:
            best = (float(err[i]), LearningCurve(float(floor), float(scale[i]), CURVE_RATES[i]))
    return best[1]


@dataclass(frozen=True)
class _Credit:
    """A planned session's share of its model's progress, credited in its upload round."""

    model: int
    start: int
    upload: int
    progress: float


def session_progress(p: MaflProblem, c: Candidates, result: Plan) -> np.ndarray:
    """Each candidate's share of P_m at the plan's selection, gamma and B:
    s_i w_i h_i / (A_{m,u} + A0_m) (zero for the candidates not chosen, and for a session
    sized past its drift peak, h < 0: a floor on gamma can put it there, and a negative
    progress would turn the learning curve's k' = k / (1 + k Q) negative)."""
    k = coefficients(p, c, result.gamma.astype(float), result.batch.astype(float))
    return np.asarray(arrival_weights(p, k, result.chosen) * np.maximum(k.steps, 0.0))


@dataclass
class Calibration:
    """Per model: the loss measured at each plan against the progress delivered before it,
    and the learning curve fitted to them. ``credit`` books a plan's sessions; those that
    start before the next plan's first round were committed (the receding horizon) and count."""

    points: dict[int, list[tuple[float, float]]] = field(default_factory=dict)
    booked: list[_Credit] = field(default_factory=list)
    planned: list[_Credit] = field(default_factory=list)

    def delivered(self, model: int, before: int) -> float:
        """Q: the progress of model's committed sessions that upload before round ``before``."""
        return sum(x.progress for x in self.booked if x.model == model and x.upload < before)

    def calibrate(self, first_round: int, terms: tuple[TaskTerms, ...]) -> tuple[TaskTerms, ...]:
        """Record every model's measured gap at ``first_round`` and return the terms with G
        and k from its learning curve (the probe's where there is none yet)."""
        self.booked.extend(x for x in self.planned if x.start < first_round)
        self.planned = []
        out = []
        for m, t in enumerate(terms):
            q = self.delivered(m, first_round)
            seen = self.points.setdefault(m, [])
            seen.append((q, t.gap))
            curve = fit_curve(np.array([a for a, _ in seen]), np.array([b for _, b in seen]))
            if curve is None:
                out.append(t)
                continue
            gap, rate = curve.ahead(q)
            out.append(dataclasses.replace(t, gap=gap, rate=rate))
        return tuple(out)

    def credit(self, first_round: int, p: MaflProblem, c: Candidates, result: Plan) -> None:
        """Book the plan's chosen sessions (rounds relative to ``first_round``)."""
        share = session_progress(p, c, result)
        self.planned = [
            _Credit(
                int(c.model[i]),
                first_round + int(c.start[i]),
                first_round + int(c.upload[i]),
                float(share[i]),
            )
            for i in np.flatnonzero(result.chosen > 0.5)
        ]

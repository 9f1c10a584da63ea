"""Rounding the relaxed MA-FL schedule to sessions, then improving it on the exact J by local
search (see ``fedtempo.alloc.mafl``)."""

from __future__ import annotations

import numpy as np

from fedtempo.alloc.mafl.problem import (
    Candidates,
    Coefficients,
    MaflProblem,
    _occupancy,
    balance,
    balance_change,
    objective,
)
from fedtempo.alloc.pruning import Infeasible

SWAP_PASSES = 4


class _Selection:
    """Chosen candidates with what they hold: device rounds, channels, energy."""

    def __init__(self, p: MaflProblem, c: Candidates, k: Coefficients) -> None:
        self.p, self.c, self.k = p, c, k
        self.busy = np.zeros((p.samples.shape[0], p.available.shape[1]), dtype=bool)
        self.used = p.channel_used.astype(np.int64).copy()
        self.chosen = np.zeros(len(c.device))
        self.spent = 0.0
        self._rounds = _occupancy(p, c)  # (device, round) x candidate

    def _span(self, i: int) -> tuple[int, slice, int]:
        c = self.c
        return int(c.device[i]), slice(int(c.start[i]), int(c.upload[i]) + 1), int(c.upload[i])

    def fits(self, i: int) -> bool:
        n, rounds, u = self._span(i)
        budget = self.p.energy_budget
        over = budget is not None and self.spent + self.k.energy[i] > budget
        return not (self.busy[n, rounds].any() or self.used[u] >= self.p.channels or over)

    def take(self, i: int) -> None:
        n, rounds, u = self._span(i)
        self.busy[n, rounds] = True
        self.used[u] += 1
        self.chosen[i] = 1.0
        self.spent += float(self.k.energy[i])

    def drop(self, i: int) -> None:
        n, rounds, u = self._span(i)
        self.busy[n, rounds] = False
        self.used[u] -= 1
        self.chosen[i] = 0.0
        self.spent -= float(self.k.energy[i])

    def value(self, add: int | None = None) -> float:
        """J of the selection (with candidate ``add`` too)."""
        if add is None:
            return objective(self.p, self.c, self.chosen, self.k)
        self.chosen[add] = 1.0
        out = objective(self.p, self.c, self.chosen, self.k)
        self.chosen[add] = 0.0
        return out

    def best_addition(self, model: int | None = None) -> tuple[float, int]:
        """The fitting candidate (of ``model`` only, if given) whose addition gives the lowest
        J (inf, -1: none fits); ties go to the lowest index."""
        values = added_values(self.p, self.c, self.chosen, self.k)
        free = (self.chosen == 0) & self.all_fit()
        if model is not None:
            free &= self.c.model == model
        fitting = np.flatnonzero(free)
        if len(fitting) == 0:
            return np.inf, -1
        i = int(fitting[int(np.argmin(values[fitting]))])
        return float(values[i]), i

    def all_fit(self) -> np.ndarray:
        """``fits`` for every candidate at once."""
        clash = self._rounds.T @ self.busy.ravel().astype(float) > 0
        full = self.used[self.c.upload] >= self.p.channels
        out = ~clash & ~full
        if self.p.energy_budget is not None:
            out &= self.spent + self.k.energy <= self.p.energy_budget
        return np.asarray(out)


def added_values(p: MaflProblem, c: Candidates, s: np.ndarray, k: Coefficients) -> np.ndarray:
    """J(s + e_i) for every candidate i, at once: adding i changes one (model, round) slot's
    step, one model's Psi, one pair's participation, its model's visit balance and the energy
    (``objective`` for each i, to float rounding; a test checks it)."""
    n_mod, horizon = len(p.terms), p.available.shape[1]
    size = n_mod * horizon
    share = np.bincount(k.slot, weights=k.share * s, minlength=size)
    moved = np.bincount(k.slot, weights=k.share * k.steps * s, minlength=size)
    spread = np.repeat(k.spread, horizon)
    step = moved / (share + spread)
    progress = step.reshape(n_mod, horizon).sum(axis=1)
    psi = k.weight * k.gap / (1 + k.rate * progress)
    planned = np.bincount(k.pair, weights=s * k.work, minlength=len(k.visits))
    left_out = k.cover / (k.visits + planned)
    base = psi.sum() + left_out.sum() + balance(k, s) + p.beta_e * float(k.energy @ s)
    slot, m, pair = k.slot, c.model, k.pair
    new_step = (moved[slot] + k.share * k.steps) / (share[slot] + k.share + spread[slot])
    new_psi = k.weight[m] * k.gap[m] / (1 + k.rate[m] * (progress[m] + new_step - step[slot]))
    new_left_out = k.cover[pair] / (k.visits[pair] + planned[pair] + k.work)
    spread_out = balance_change(k, s, pair, k.work)
    return np.asarray(
        base
        + (new_psi - psi[m])
        + (new_left_out - left_out[pair])
        + spread_out
        + p.beta_e * k.energy
    )


def round_greedy(p: MaflProblem, c: Candidates, relaxed: np.ndarray, k: Coefficients) -> np.ndarray:
    """Round a relaxed selection, each step lowering the exact J:
    0. first reserve ``min_sessions`` per model: its candidates by decreasing relaxed value,
       each kept if it fits (Infeasible if a model falls short);
    1. take candidates by decreasing relaxed value, keeping one if it fits (device free,
       channel free, budget) and lowers J;
    2. add, best first, any fitting candidate that still lowers J (the concave penalty drives
       small fractions to 0, and those can still pay for themselves);
    3. swap: replace a chosen session by the best one that fits in its place, if J falls (the
       penalised relaxation stops at a vertex near its start, e.g. every session on the one
       cheap device where spreading them is better), by one of the same model where the
       model is at its minimum; up to ``SWAP_PASSES`` passes."""
    sel = _Selection(p, c, k)
    order = np.argsort(-relaxed, kind="stable")
    count = np.zeros(len(p.terms), dtype=np.int64)
    for m in range(len(p.terms)) if p.min_sessions > 0 else ():
        for i in (int(i) for i in order if c.model[i] == m):
            if count[m] >= p.min_sessions:
                break
            if sel.fits(i):
                sel.take(i)
                count[m] += 1
        if count[m] < p.min_sessions:
            raise Infeasible(
                f"MA-FL rounding: model {m} gets {int(count[m])} session(s), "
                f"needs {p.min_sessions} (channels, devices or energy budget exhausted)"
            )
    current = sel.value()
    for i in (int(i) for i in order):
        if relaxed[i] > 1e-6 and sel.fits(i) and (value := sel.value(i)) < current:
            sel.take(i)
            current = value
    while (found := sel.best_addition())[0] < current:
        sel.take(found[1])
        current = found[0]
    for _ in range(SWAP_PASSES):
        improved = False
        for i in [int(i) for i in np.flatnonzero(sel.chosen)]:
            sel.drop(i)
            m = int(c.model[i])
            short = sel.chosen[c.model == m].sum() < p.min_sessions
            value, j = sel.best_addition(m if short else None)
            if value < current - 1e-12 * max(1.0, abs(current)):
                sel.take(j)
                current, improved = value, True
            else:
                sel.take(i)
        if not improved:
            break
    return sel.chosen

"""The MA-FL solver: successive convex approximation of the schedule, greedy rounding, then
the gamma/B step with the schedule fixed (see ``fedtempo.alloc.mafl``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

from fedtempo.alloc.mafl.problem import (
    Candidates,
    Coefficients,
    MaflProblem,
    _drift_factor,
    _occupancy,
    _onehot,
    _population,
    _terms_array,
    arrival_weights,
    balance_change,
    batch_factor,
    candidates,
    coefficients,
    drift_peak,
    effective_steps,
    objective,
    pair_models,
)
from fedtempo.alloc.mafl.rounding import round_greedy
from fedtempo.alloc.mafl.solve import SolverFailed, solve_step
from fedtempo.alloc.pruning import Infeasible


@dataclass
class Plan:
    """The chosen sessions (indices into ``candidates``), gamma and B, and the objective's
    history: ``relaxed`` (penalised S-step J per iteration), ``rounded`` (J after rounding),
    ``sizing`` (J per gamma/B block step, continuous), ``objective`` (J on the integers)."""

    candidates: Candidates
    chosen: np.ndarray
    gamma: np.ndarray
    batch: np.ndarray
    relaxed: list[float] = field(default_factory=list)
    rounded: float = float("nan")
    sizing: list[float] = field(default_factory=list)
    objective: float = float("nan")


def _schedule_constraints(
    p: MaflProblem, c: Candidates, s: cp.Variable, energy: np.ndarray
) -> list[cp.Constraint]:
    horizon = p.available.shape[1]
    room = p.channels - p.channel_used
    cons = [s >= 0, s <= 1, _occupancy(p, c) @ s <= 1, _onehot(c.upload, horizon) @ s <= room]
    if p.energy_budget is not None:
        cons.append(energy @ s <= p.energy_budget)
    if p.min_sessions > 0:
        cons.append(_onehot(c.model, len(p.terms)) @ s >= p.min_sessions)
    return cons


def _penalty(p: MaflProblem, c: Candidates, k: Coefficients) -> float:
    """mu: the mean |dJ/ds_i| at s = 0 (of the S-step's form), unless given."""
    if p.penalty is not None:
        return p.penalty
    m = c.model
    gain = k.weight[m] * k.gap[m] * k.rate[m] * k.mean_steps[m] * k.share / k.spread[m]
    gain = gain + k.work * k.cover[k.pair] / k.visits[k.pair] ** 2
    gain = gain - balance_change(k, np.zeros(len(m)), k.pair, k.work)  # one visit's change
    return float(np.mean(np.abs(p.beta_e * k.energy - gain))) if len(m) else 0.0


def _balance_expression(
    k: Coefficients, counted: sp.csr_matrix, s: cp.Variable
) -> tuple[cp.Expression | float, list[cp.Constraint]]:
    """The visit-balance term in s: sum over the charged pairs of lambda (v - mean_m)^2, with v
    the pairs' visits (``counted`` @ s + recent) and mean_m a variable held to the mean over
    model m's devices with data (a sum of squares of affine functions of s; the lifted mean
    keeps the matrices as sparse as ``counted``)."""
    charged = np.flatnonzero(k.balance > 0)
    if len(charged) == 0:
        return 0.0, []
    n_mod = len(k.weight)
    model, size = pair_models(k)
    members = np.flatnonzero(k.member)
    average = sp.csr_matrix(
        (1.0 / size[model[members]], (model[members], members)), shape=(n_mod, len(k.visits))
    )
    mean = cp.Variable(n_mod)
    held = [mean == average @ counted @ s + average @ k.visits]
    scale = sp.diags(np.sqrt(k.balance[charged]))
    own = counted[charged] @ s + k.visits[charged] - _onehot(model[charged], n_mod).T @ mean
    return cp.sum_squares(scale @ own), held


def relax_schedule(
    p: MaflProblem,
    c: Candidates,
    k: Coefficients,
    max_iter: int = 30,
    tol: float = 1e-7,
) -> tuple[np.ndarray, list[float]]:
    """The S-step: returns the relaxed selection and the penalised objective per iteration."""
    n_mod, horizon = len(p.terms), p.available.shape[1]
    size = len(c.device)
    s = cp.Variable(size)
    lin = cp.Parameter(size)
    arrivals = _onehot(k.slot, n_mod * horizon) @ sp.diags(k.share)  # A_{m,t} = row @ s
    spread = np.repeat(k.spread, horizon)
    quality = 1 - cp.multiply(spread, cp.inv_pos(arrivals @ s + spread))  # A / (A + A0)
    per_model = _onehot(np.repeat(np.arange(n_mod), horizon), n_mod)
    progress = cp.multiply(k.mean_steps, per_model @ quality)
    psi = cp.multiply(k.weight * k.gap, cp.inv_pos(1 + cp.multiply(k.rate, progress)))
    covered = np.flatnonzero(k.cover > 0)  # pairs the participation term charges
    counted = _onehot(k.pair, len(k.visits)) @ sp.diags(k.work)  # visits of each pair
    visits = counted[covered] @ s + k.visits[covered]
    left_out = k.cover[covered] @ cp.inv_pos(visits) if len(covered) else 0.0
    spread_out, held = _balance_expression(k, counted, s)
    problem = cp.Problem(
        cp.Minimize(cp.sum(psi) + left_out + spread_out + (p.beta_e * k.energy) @ s + lin @ s),
        [*_schedule_constraints(p, c, s, k.energy), *held],
    )
    lin.value = np.zeros(size)
    solve_step(problem, "schedule relaxation", p)
    x = np.clip(np.asarray(s.value), 0.0, 1.0)
    mu = _penalty(p, c, k)

    def penalised(v: np.ndarray) -> float:
        return objective(p, c, v, k, mean=True) + mu * float(np.sum(v * (1 - v)))

    history = [penalised(x)]
    for _ in range(max_iter):
        lin.value = mu * (1 - 2 * x)
        try:
            solve_step(problem, "schedule SCA step", p)
        except SolverFailed:  # numerically stuck: keep the best point so far, as below
            break
        nxt = np.clip(np.asarray(s.value), 0.0, 1.0)
        value = penalised(nxt)
        if value > history[-1]:  # solver tolerance; keep the better point and stop
            break
        x = nxt
        history.append(value)
        if history[-2] - value <= tol * max(1.0, abs(value)):
            break
    return x, history


def _sizing_bounds(
    p: MaflProblem, gamma: np.ndarray, batch: np.ndarray, pairs: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Upper bounds on gamma (B fixed) and B (gamma fixed) from the latency of each pair, and
    on gamma from the drift peak (never below ``min_iterations``)."""
    n, m = pairs
    seconds = p.compute_budget_s()[n, m] * p.speed[n] / p.train_flops[m]  # samples that fit
    peak = drift_peak(
        _terms_array(p.terms, "local_steps")[m], _terms_array(p.terms, "drift_decay")[m]
    )
    peak = np.maximum(peak, float(p.min_iterations))
    g_max = np.minimum(np.minimum(p.max_iterations, seconds / batch[n, m]), peak)
    b_max = np.minimum(np.minimum(p.batch_range[1], p.samples[n, m]), seconds / gamma[n, m])
    return g_max, b_max


def _gamma_floor(p: MaflProblem, g_max: np.ndarray) -> np.ndarray:
    """The least gamma of each pair: ``min_iterations``, or its upper bound where that is less
    (the latency comes first; a drift peak below the floor does not lower it)."""
    return np.asarray(np.minimum(float(p.min_iterations), np.maximum(g_max, 1.0)))


@dataclass(frozen=True)
class _Pairs:
    """The (device, model) pairs with chosen sessions: P_m = sum_pairs weight x h(gamma, B)."""

    device: np.ndarray
    model: np.ndarray
    count: np.ndarray  # sessions per pair
    weight: np.ndarray  # sum over its sessions of w_i / (A_{m,u} + A0_m)
    samples: np.ndarray
    local_steps: np.ndarray
    drift_decay: np.ndarray
    batch_noise: np.ndarray
    flop_j: np.ndarray  # J per sample processed
    upload_j: np.ndarray
    cover: np.ndarray  # the participation term's phi G rho z of the pair
    visits: np.ndarray  # c + its recent visits

    @property
    def index(self) -> tuple[np.ndarray, np.ndarray]:
        return self.device, self.model


def _pairs(p: MaflProblem, c: Candidates, chosen: np.ndarray, k: Coefficients) -> _Pairs:
    per_session = arrival_weights(p, k, chosen)
    counts = np.zeros(p.samples.shape)
    weight = np.zeros(p.samples.shape)
    np.add.at(counts, (c.device, c.model), chosen)
    np.add.at(weight, (c.device, c.model), per_session)
    n, m = np.nonzero(counts)
    pair = n * len(p.terms) + m
    return _Pairs(
        device=n,
        model=m,
        count=counts[n, m],
        weight=weight[n, m],
        samples=p.samples[n, m],
        local_steps=_terms_array(p.terms, "local_steps")[m],
        drift_decay=_terms_array(p.terms, "drift_decay")[m],
        batch_noise=_terms_array(p.terms, "batch_noise")[m],
        flop_j=p.kappa * p.speed[n] ** 2 * p.train_flops[m],
        upload_j=p.upload_j[n, m],
        cover=k.cover[pair],
        visits=k.visits[pair],
    )


def size_sessions(
    p: MaflProblem,
    c: Candidates,
    chosen: np.ndarray,
    gamma: np.ndarray,
    batch: np.ndarray,
    max_iter: int = 20,
    tol: float = 1e-7,
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """The gamma/B step with the schedule fixed: alternate exact convex solves in gamma and in B,
    then round to integers within the latency bounds. Returns (gamma, B, J per block step on
    the continuous values)."""
    gamma, batch = gamma.astype(float).copy(), batch.astype(float).copy()
    q = _pairs(p, c, chosen, coefficients(p, c, gamma, batch))
    if len(q.device) == 0:
        return gamma.astype(np.int64), batch.astype(np.int64), []

    def value() -> float:
        return objective(p, c, chosen, coefficients(p, c, gamma, batch))

    history = [value()]
    for _ in range(max_iter):
        for block in (_solve_gamma, _solve_batch):
            try:
                trial_g, trial_b = block(p, q, gamma, batch)
            except SolverFailed:  # numerically stuck: keep the point so far, as below
                continue
            old_g, old_b = gamma.copy(), batch.copy()
            gamma[q.index], batch[q.index] = trial_g, trial_b
            if value() > history[-1]:  # solver tolerance: keep the previous point
                gamma, batch = old_g, old_b
        history.append(value())
        if history[-2] - history[-1] <= tol * max(1.0, abs(history[-1])):
            break
    g_max, _ = _sizing_bounds(p, gamma, batch, q.index)
    g_top = np.floor(g_max)
    gamma[q.index] = np.clip(np.round(gamma[q.index]), _gamma_floor(p, g_top), np.maximum(g_top, 1))
    _, b_max = _sizing_bounds(p, gamma, batch, q.index)
    top = np.maximum(np.floor(b_max), 1)
    batch[q.index] = np.clip(np.round(batch[q.index]), np.minimum(p.batch_range[0], top), top)
    return gamma.astype(np.int64), batch.astype(np.int64), history


def _left_out(p: MaflProblem, q: _Pairs, fraction: cp.Expression) -> cp.Expression | float:
    """The participation term with each pair's sessions counted by their work, ``fraction`` of
    the nominal session's samples capped at 1 (``work_visits``; else a constant, left out):
    inv_pos of a concave count, so convex in gamma and in B."""
    on = np.flatnonzero(q.cover > 0)
    if not p.work_visits or len(on) == 0:
        return 0.0
    work = cp.minimum(1, fraction[on])
    return q.cover[on] @ cp.inv_pos(q.visits[on] + cp.multiply(q.count[on], work))


def _sizing_problem(
    p: MaflProblem,
    q: _Pairs,
    progress: cp.Expression,
    energy: cp.Expression,
    cons: list[cp.Constraint],
    left_out: cp.Expression | float,
) -> cp.Problem:
    """min sum_m phi G / (1 + k P_m) + ``left_out`` + beta E subject to ``cons`` (and the
    energy budget), with P_m = sum over m's pairs of ``progress``."""
    per_model = _onehot(q.model, len(p.terms))
    gap = _terms_array(p.terms, "weight") * _terms_array(p.terms, "gap")
    rate = _terms_array(p.terms, "rate")
    psi = cp.multiply(gap, cp.inv_pos(1 + cp.multiply(rate, per_model @ progress)))
    if p.energy_budget is not None:
        cons = [*cons, energy <= p.energy_budget]
    return cp.Problem(cp.Minimize(cp.sum(psi) + left_out + p.beta_e * energy), cons)


def _solve_gamma(
    p: MaflProblem, q: _Pairs, gamma: np.ndarray, batch: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    b = batch[q.index]
    g_max, _ = _sizing_bounds(p, gamma, batch, q.index)
    lo = _gamma_floor(p, g_max)
    g = cp.Variable(len(q.count))
    g0 = q.local_steps
    # gamma0 log(1 + gamma / gamma0) - delta gamma (concave)
    drift = cp.multiply(g0, cp.log(1 + cp.multiply(1 / g0, g))) - cp.multiply(q.drift_decay, g)
    progress = cp.multiply(q.weight * batch_factor(b, q.samples, q.batch_noise), drift)
    energy = (q.count * q.flop_j * b) @ g + float(q.count @ q.upload_j)
    cons = [g >= lo, g <= np.maximum(g_max, 1)]
    left_out = _left_out(p, q, cp.multiply(b / p.nominal_samples, g))
    solve_step(_sizing_problem(p, q, progress, energy, cons, left_out), "iteration sizing", p)
    return np.clip(np.asarray(g.value), lo, np.maximum(g_max, 1)), b


def _solve_batch(
    p: MaflProblem, q: _Pairs, gamma: np.ndarray, batch: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    g = gamma[q.index]
    _, b_max = _sizing_bounds(p, gamma, batch, q.index)
    lo = np.minimum(float(p.batch_range[0]), b_max)
    b = cp.Variable(len(q.count))
    a = _population(q.samples, q.batch_noise)
    scale = q.batch_noise / a  # B / (a B + Bn) = (1 - scale / (B + scale)) / a
    factor = cp.multiply(1 / a, 1 - cp.multiply(scale, cp.inv_pos(b + scale)))
    drift = np.maximum(_drift_factor(g, q.local_steps, q.drift_decay), 0.0)  # gamma <= its peak
    progress = cp.multiply(q.weight * drift, factor)
    energy = (q.count * q.flop_j * g) @ b + float(q.count @ q.upload_j)
    left_out = _left_out(p, q, cp.multiply(g / p.nominal_samples, b))
    cons = [b >= lo, b <= b_max]
    solve_step(_sizing_problem(p, q, progress, energy, cons, left_out), "batch sizing", p)
    return g, np.clip(np.asarray(b.value), lo, b_max)


START_GRID = (1, 2, 5, 10, 20, 50, 100, 200)


def starting_iterations(p: MaflProblem) -> np.ndarray:
    """gamma to start the S-step from, per model: on a grid (``min_iterations`` to
    ``max_iterations``), the value with the best first-order net value of one average session
    at the nominal B, phi G k h(gamma) w / (w + A0) - beta E(gamma); capped by each pair's
    latency bound."""
    out = np.full(p.samples.shape, p.iterations, dtype=np.int64)
    least = min(p.min_iterations, p.max_iterations)
    grid = np.array(
        sorted({least, *(g for g in START_GRID if least <= g <= p.max_iterations)}), dtype=float
    )
    share = p.share()
    for m, t in enumerate(p.terms):
        has = p.samples[:, m] > 0
        if not has.any():
            continue
        w, d_n = float(share[has, m].mean()), float(p.samples[has, m].mean())
        batch, data = np.full_like(grid, p.batch), np.full_like(grid, d_n)
        h = effective_steps(grid, batch, data, t.local_steps, t.batch_noise, t.drift_decay)
        e_flop = float(np.mean(p.kappa * p.speed[has] ** 2)) * p.train_flops[m] * p.batch
        net = (
            t.weight * t.gap * t.rate * h * w / (w + max(t.spread, 1e-9)) - p.beta_e * e_flop * grid
        )
        out[:, m] = int(grid[int(np.argmax(net))])
    seconds = p.compute_budget_s() * p.speed[:, None] / p.train_flops[None, :]
    cap = np.maximum(np.floor(seconds / p.batch), 1).astype(np.int64)
    return np.asarray(np.minimum(out, cap))


def plan(p: MaflProblem, fixed: Candidates | None = None, size: bool = True) -> Plan:
    """Schedule, then size: the SPEC's SCA recipe for one horizon. Its two halves alone (SPEC
    B's ablations): ``fixed`` sessions (all taken; no schedule step) sized by the optimiser, or
    ``size=False``: the optimiser's schedule at the nominal gamma and B."""
    c = candidates(p) if fixed is None else fixed
    batch = np.full(p.samples.shape, p.batch, dtype=np.int64)
    if size:
        gamma = starting_iterations(p)
    else:
        gamma = np.full(p.samples.shape, p.iterations, dtype=np.int64)
    k0 = coefficients(p, c, gamma, batch)
    if len(c.device) == 0:
        if p.min_sessions > 0:
            raise Infeasible("MA-FL: no device can run any session within the horizon")
        return Plan(c, np.zeros(0), gamma, batch, [], 0.0, [], objective(p, c, np.zeros(0), k0))
    if fixed is None:
        relaxed, history = relax_schedule(p, c, k0)
        chosen = round_greedy(p, c, relaxed, k0)
    else:
        chosen, history = np.ones(len(c.device)), []
    rounded = objective(p, c, chosen, k0)
    sizing: list[float] = []
    if size:
        gamma, batch, sizing = size_sessions(p, c, chosen, gamma, batch)
    final = objective(p, c, chosen, coefficients(p, c, gamma, batch))
    return Plan(c, chosen, gamma, batch, history, rounded, sizing, final)

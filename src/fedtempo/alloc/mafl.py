"""MA-FL scheduling and batch/iteration allocation by successive convex approximation (SPEC B).

Over a horizon of H rounds, a *candidate session* i = (device n, model m, start round t) runs
for ``session_rounds[n, m]`` = d rounds and uploads in round t + d - 1. The schedule picks
candidates (s_i in {0, 1}); gamma_{n,m} (SGD iterations) and B_{n,m} (batch) size every session
of n on m. The objective is

    J = sum_m phi_m Psi_m + beta_E E_total,
    Psi_m = G_m / (1 + k_m P_m)
            + sum_{i in m} s_i rho_n [a_m gamma (1/B - 1/D_n) + b_m gamma^3 + c_m gamma d^2],
    P_m = sum_{i in m} s_i rho_n gamma,    E_total = sum_i s_i (kappa c_m B gamma f_n^2 + E_up).

Psi_m is our convergence-bound surrogate (the paper's exact bound is not published in the
seed): G_m the current loss gap (warm models start lower), shrinking with the data-weighted
local steps P_m at the rate k_m fitted on warm-up rounds; the other terms come from the
descent lemma of local SGD with step eta, smoothness L, gradient norm g and per-sample gradient
variance sigma^2: mini-batch noise a = L eta^2 sigma^2 / 2 per step (with the finite-population
factor 1/B - 1/D), local drift b = eta^3 L^2 g^2 / 6 (the sum over a session of the squared
distance travelled), staleness c = eta L^2 u^2 / 2 with u the server's step per round (a
session spanning d rounds starts d server steps behind). Constraints: one model per device at a
time, at most C uploads per round, data, availability, devices busy with committed sessions,
an optional energy budget and an optional minimum number of sessions per model; the latency
of a session (download, gamma x B samples of compute, upload) must fit its d rounds.

Solution (the SPEC's recipe):
1. S-step: relax s to [0, 1], add the concave penalty mu sum s (1 - s), linearise it at the
   current point and solve the convex program (CVXPY); iterate (a majorise-minimise scheme, so
   the penalised objective never increases); round greedily.
2. gamma/B step with the schedule fixed: alternate the convex problem in gamma (B fixed) and
   the convex problem in B (gamma fixed), each solved exactly; the objective never increases.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

from fedtempo.alloc.pruning import Infeasible


@dataclass(frozen=True)
class TaskTerms:
    """The constants of Psi_m for one model (loss units: nats)."""

    gap: float  # G_m
    rate: float  # k_m, per data-weighted local step
    noise: float  # a_m
    drift: float  # b_m
    staleness: float  # c_m
    weight: float = 1.0  # phi_m


@dataclass(frozen=True)
class MaflProblem:
    """One horizon's instance (N devices, M models, H rounds). Energy in J, times in s."""

    terms: tuple[TaskTerms, ...]
    samples: np.ndarray  # D_{n,m} (N x M); 0 = no data
    train_flops: np.ndarray  # c_m: FLOPs per training sample (M)
    speed: np.ndarray  # f_n: FLOP/s (N)
    kappa: float  # effective capacitance alpha/2
    upload_j: np.ndarray  # energy of one upload of m by n (N x M)
    comm_s: np.ndarray  # download + upload seconds of m on n (N x M)
    round_s: float
    session_rounds: np.ndarray  # d_{n,m} (N x M), >= 1
    available: np.ndarray  # N x H
    busy_from: np.ndarray  # relative round from which device n is free (N)
    channel_used: np.ndarray  # uploads already committed per round (H)
    channels: int
    beta_e: float
    iterations: int  # gamma used while choosing the schedule
    batch: int  # B used while choosing the schedule
    max_iterations: int = 100
    batch_range: tuple[int, int] = (8, 128)
    energy_budget: float | None = None
    min_sessions: int = 0
    penalty: float | None = None  # mu; None: the mean |dJ/ds| at s = 0

    @property
    def rho(self) -> np.ndarray:
        total = self.samples.sum(axis=0, keepdims=True)
        return np.divide(self.samples, total, out=np.zeros_like(self.samples), where=total > 0)

    def energy(self, gamma: np.ndarray, batch: np.ndarray) -> np.ndarray:
        """Energy of one session of each (n, m) at (gamma, B) (N x M)."""
        per_flop = self.kappa * self.speed[:, None] ** 2
        return per_flop * self.train_flops[None, :] * batch * gamma + self.upload_j

    def compute_budget_s(self) -> np.ndarray:
        """Seconds of compute a session may take within its rounds (N x M)."""
        return self.session_rounds * self.round_s - self.comm_s


@dataclass(frozen=True)
class Candidates:
    """The sessions a schedule may pick: device, model, start and upload rounds (relative)."""

    device: np.ndarray
    model: np.ndarray
    start: np.ndarray
    upload: np.ndarray


def candidates(p: MaflProblem) -> Candidates:
    n_dev, n_mod = p.samples.shape
    horizon = p.available.shape[1]
    budget = p.compute_budget_s()
    rows = []
    for n in range(n_dev):
        for m in range(n_mod):
            d = int(p.session_rounds[n, m])
            if p.samples[n, m] <= 0 or budget[n, m] <= 0:
                continue
            for t in range(int(p.busy_from[n]), horizon - d + 1):
                if p.available[n, t : t + d].all():
                    rows.append((n, m, t, t + d - 1))
    arr = np.array(rows, dtype=np.int64).reshape(-1, 4)
    return Candidates(arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3])


def _occupancy(p: MaflProblem, c: Candidates) -> sp.csr_matrix:
    """Rows (device, round): 1 where the candidate keeps that device busy in that round."""
    horizon = p.available.shape[1]
    r, col = [], []
    for i in range(len(c.device)):
        for t in range(int(c.start[i]), int(c.upload[i]) + 1):
            r.append(int(c.device[i]) * horizon + t)
            col.append(i)
    shape = (p.samples.shape[0] * horizon, len(c.device))
    return sp.csr_matrix((np.ones(len(r)), (r, col)), shape=shape)


def _onehot(index: np.ndarray, size: int) -> sp.csr_matrix:
    cols = np.arange(len(index))
    return sp.csr_matrix((np.ones(len(index)), (index, cols)), shape=(size, len(index)))


@dataclass(frozen=True)
class Coefficients:
    """Per-candidate progress p_i, error e_i (phi-weighted) and energy; per-model G, k, phi."""

    progress: np.ndarray
    error: np.ndarray
    energy: np.ndarray
    gap: np.ndarray
    rate: np.ndarray
    weight: np.ndarray


def coefficients(
    p: MaflProblem, c: Candidates, gamma: np.ndarray, batch: np.ndarray
) -> Coefficients:
    n, m = c.device, c.model
    g, b = gamma[n, m].astype(float), batch[n, m].astype(float)
    rho, d_samples = p.rho[n, m], p.samples[n, m]
    a = np.array([t.noise for t in p.terms])[m]
    dr = np.array([t.drift for t in p.terms])[m]
    st = np.array([t.staleness for t in p.terms])[m]
    phi = np.array([t.weight for t in p.terms])
    d = p.session_rounds[n, m].astype(float)
    err = rho * (a * g * (1 / b - 1 / d_samples) + dr * g**3 + st * g * d**2)
    return Coefficients(
        progress=rho * g,
        error=phi[m] * err,
        energy=p.energy(gamma, batch)[n, m],
        gap=np.array([t.gap for t in p.terms]),
        rate=np.array([t.rate for t in p.terms]),
        weight=phi,
    )


def objective(p: MaflProblem, c: Candidates, s: np.ndarray, k: Coefficients) -> float:
    """J at the (possibly fractional) selection s, without the binarity penalty."""
    n_mod = len(p.terms)
    progress = np.bincount(c.model, weights=k.progress * s, minlength=n_mod)
    psi = k.weight * k.gap / (1 + k.rate * progress)
    return float(psi.sum() + (k.error + p.beta_e * k.energy) @ s)


@dataclass
class Plan:
    """The chosen sessions (indices into ``candidates``), gamma and B, and the objective's
    history: ``relaxed`` (penalised J per S-step iteration), ``rounded`` (J after rounding),
    ``sizing`` (J per gamma/B block step, continuous), ``objective`` (J on the integers)."""

    candidates: Candidates
    chosen: np.ndarray
    gamma: np.ndarray
    batch: np.ndarray
    relaxed: list[float] = field(default_factory=list)
    rounded: float = float("nan")
    sizing: list[float] = field(default_factory=list)
    objective: float = float("nan")


def _solve(problem: cp.Problem, what: str, p: MaflProblem) -> None:
    problem.solve(solver=cp.CLARABEL)
    if problem.status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
        budget = "none" if p.energy_budget is None else f"{p.energy_budget:g} J"
        raise Infeasible(
            f"MA-FL {what}: no schedule meets the constraints (energy budget {budget}, "
            f"at least {p.min_sessions} session(s) per model, {p.channels} channel(s) per round, "
            f"{p.available.shape[1]} round(s))"
        )
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        raise RuntimeError(f"MA-FL {what}: solver ended with status {problem.status}")


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


def relax_schedule(
    p: MaflProblem,
    c: Candidates,
    k: Coefficients,
    max_iter: int = 30,
    tol: float = 1e-7,
) -> tuple[np.ndarray, list[float]]:
    """The S-step: returns the relaxed selection and the penalised objective per iteration."""
    size = len(c.device)
    s = cp.Variable(size)
    lin = cp.Parameter(size)
    models = _onehot(c.model, len(p.terms))
    progress = models @ sp.diags(k.progress)
    psi = [
        k.weight[m] * k.gap[m] * cp.inv_pos(1 + k.rate[m] * (progress[m] @ s))
        for m in range(len(p.terms))
    ]
    cost = k.error + p.beta_e * k.energy
    problem = cp.Problem(
        cp.Minimize(cp.sum(cp.hstack(psi)) + cost @ s + lin @ s),
        _schedule_constraints(p, c, s, k.energy),
    )
    lin.value = np.zeros(size)
    _solve(problem, "schedule relaxation", p)
    x = np.clip(np.asarray(s.value), 0.0, 1.0)
    mu = p.penalty
    if mu is None:
        grad0 = -k.weight[c.model] * k.gap[c.model] * k.rate[c.model] * k.progress + cost
        mu = float(np.mean(np.abs(grad0))) if size else 0.0

    def penalised(v: np.ndarray) -> float:
        return objective(p, c, v, k) + mu * float(np.sum(v * (1 - v)))

    history = [penalised(x)]
    for _ in range(max_iter):
        lin.value = mu * (1 - 2 * x)
        _solve(problem, "schedule SCA step", p)
        nxt = np.clip(np.asarray(s.value), 0.0, 1.0)
        value = penalised(nxt)
        if value > history[-1]:  # solver tolerance; keep the better point and stop
            break
        x = nxt
        history.append(value)
        if history[-2] - value <= tol * max(1.0, abs(value)):
            break
    return x, history


def round_greedy(p: MaflProblem, c: Candidates, relaxed: np.ndarray, k: Coefficients) -> np.ndarray:
    """Round a relaxed selection: take candidates by decreasing relaxed value and keep one if it
    fits (device free, channel free, budget) and lowers J; then top up models short of
    ``min_sessions`` with their best fitting candidates. Raises Infeasible if that fails."""
    horizon = p.available.shape[1]
    busy = np.zeros((p.samples.shape[0], horizon), dtype=bool)
    used = p.channel_used.astype(np.int64).copy()
    chosen = np.zeros(len(c.device))
    spent = 0.0

    def fits(i: int) -> bool:
        n, t, u = int(c.device[i]), int(c.start[i]), int(c.upload[i])
        over = p.energy_budget is not None and spent + k.energy[i] > p.energy_budget
        return not (busy[n, t : u + 1].any() or used[u] >= p.channels or over)

    def take(i: int) -> None:
        nonlocal spent
        busy[int(c.device[i]), int(c.start[i]) : int(c.upload[i]) + 1] = True
        used[int(c.upload[i])] += 1
        chosen[i] = 1.0
        spent += float(k.energy[i])

    current = objective(p, c, chosen, k)
    for i in np.argsort(-relaxed, kind="stable"):
        if relaxed[i] <= 1e-6 or not fits(int(i)):
            continue
        chosen[i] = 1.0
        value = objective(p, c, chosen, k)
        chosen[i] = 0.0
        if value < current:
            take(int(i))
            current = value
    for m in range(len(p.terms)):
        mine = [int(i) for i in np.argsort(-relaxed, kind="stable") if c.model[i] == m]
        for i in mine:
            if chosen[c.model == m].sum() >= p.min_sessions:
                break
            if chosen[i] == 0 and fits(i):
                take(i)
        if chosen[c.model == m].sum() < p.min_sessions:
            raise Infeasible(
                f"MA-FL rounding: model {m} gets {int(chosen[c.model == m].sum())} session(s), "
                f"needs {p.min_sessions} (channels, devices or energy budget exhausted)"
            )
    return chosen


def _sizing_bounds(
    p: MaflProblem, gamma: np.ndarray, batch: np.ndarray, pairs: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Upper bounds on gamma (B fixed) and B (gamma fixed) from the latency of each pair."""
    n, m = pairs
    seconds = p.compute_budget_s()[n, m] * p.speed[n] / p.train_flops[m]  # samples that fit
    g_max = np.minimum(p.max_iterations, seconds / batch[n, m])
    b_max = np.minimum(np.minimum(p.batch_range[1], p.samples[n, m]), seconds / gamma[n, m])
    return g_max, b_max


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
    counts = np.zeros_like(gamma)
    np.add.at(counts, (c.device, c.model), chosen)
    nz = np.nonzero(counts)
    pairs = (nz[0], nz[1])
    if len(pairs[0]) == 0:
        return gamma.astype(np.int64), batch.astype(np.int64), []

    def value() -> float:
        return objective(p, c, chosen, coefficients(p, c, gamma, batch))

    history = [value()]
    for _ in range(max_iter):
        for block in (_solve_gamma, _solve_batch):
            trial_g, trial_b = block(p, counts, pairs, gamma, batch)
            old_g, old_b = gamma.copy(), batch.copy()
            gamma[pairs], batch[pairs] = trial_g, trial_b
            if value() > history[-1]:  # solver tolerance: keep the previous point
                gamma, batch = old_g, old_b
        history.append(value())
        if history[-2] - history[-1] <= tol * max(1.0, abs(history[-1])):
            break
    g_max, _ = _sizing_bounds(p, gamma, batch, pairs)
    gamma[pairs] = np.clip(np.round(gamma[pairs]), 1, np.maximum(np.floor(g_max), 1))
    _, b_max = _sizing_bounds(p, gamma, batch, pairs)
    top = np.maximum(np.floor(b_max), 1)
    batch[pairs] = np.clip(np.round(batch[pairs]), np.minimum(p.batch_range[0], top), top)
    return gamma.astype(np.int64), batch.astype(np.int64), history


def _pair_terms(p: MaflProblem, pairs: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    n, m = pairs
    t = p.terms
    return {
        "rho": p.rho[n, m],
        "d": p.session_rounds[n, m].astype(float),
        "a": np.array([x.noise for x in t])[m],
        "b": np.array([x.drift for x in t])[m],
        "c": np.array([x.staleness for x in t])[m],
        "phi": np.array([x.weight for x in t])[m],
        "inv_d": 1.0 / p.samples[n, m],
        "flop_j": p.kappa * p.speed[n] ** 2 * p.train_flops[m],
        "up": p.upload_j[n, m],
    }


def _solve_gamma(
    p: MaflProblem,
    counts: np.ndarray,
    pairs: tuple[np.ndarray, np.ndarray],
    gamma: np.ndarray,
    batch: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    q, cnt, b = _pair_terms(p, pairs), counts[pairs], batch[pairs]
    g_max, _ = _sizing_bounds(p, gamma, batch, pairs)
    g = cp.Variable(len(cnt))
    models = _onehot(pairs[1], len(p.terms))
    psi = [
        t.weight * t.gap * cp.inv_pos(1 + t.rate * (models[m] @ cp.multiply(cnt * q["rho"], g)))
        for m, t in enumerate(p.terms)
    ]
    per = q["phi"] * q["rho"] * (q["a"] * (1 / b - q["inv_d"]) + q["c"] * q["d"] ** 2)
    energy = cnt * (q["flop_j"] * b)
    cubic = cp.multiply(cnt * q["phi"] * q["rho"] * q["b"], cp.power(g, 3))
    cost = cp.sum(cp.hstack(psi)) + (cnt * per + p.beta_e * energy) @ g + cp.sum(cubic)
    cons = [g >= 1, g <= np.maximum(g_max, 1)]
    if p.energy_budget is not None:
        cons.append(energy @ g + float(cnt @ q["up"]) <= p.energy_budget)
    _solve(cp.Problem(cp.Minimize(cost), cons), "iteration sizing", p)
    return np.clip(np.asarray(g.value), 1, np.maximum(g_max, 1)), b


def _solve_batch(
    p: MaflProblem,
    counts: np.ndarray,
    pairs: tuple[np.ndarray, np.ndarray],
    gamma: np.ndarray,
    batch: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    q, cnt, g = _pair_terms(p, pairs), counts[pairs], gamma[pairs]
    _, b_max = _sizing_bounds(p, gamma, batch, pairs)
    lo = np.minimum(float(p.batch_range[0]), b_max)
    b = cp.Variable(len(cnt))
    noise = cnt * q["phi"] * q["rho"] * q["a"] * g
    energy = cnt * q["flop_j"] * g
    cost = noise @ cp.inv_pos(b) + p.beta_e * (energy @ b)
    cons = [b >= lo, b <= b_max]
    if p.energy_budget is not None:
        cons.append(energy @ b + float(cnt @ q["up"]) <= p.energy_budget)
    _solve(cp.Problem(cp.Minimize(cost), cons), "batch sizing", p)
    return g, np.clip(np.asarray(b.value), lo, b_max)


START_GRID = (1, 2, 5, 10, 20, 50, 100, 200)


def starting_iterations(p: MaflProblem) -> np.ndarray:
    """gamma to start the S-step from, per model: on a grid (up to ``iterations`` x 10), the
    value with the best first-order net value of one session at the nominal B and d = 1,
    phi (G k rho gamma - rho (a gamma (1/B - 1/D) + b gamma^3 + c gamma)) - beta E; capped
    by each pair's latency bound."""
    rho = p.rho
    out = np.full(p.samples.shape, p.iterations, dtype=np.int64)
    grid = [g for g in START_GRID if g <= min(p.max_iterations, 10 * p.iterations)]
    for m, t in enumerate(p.terms):
        has = p.samples[:, m] > 0
        if not has.any():
            continue
        r, d_n = float(rho[has, m].mean()), float(p.samples[has, m].mean())
        e_flop = float(np.mean(p.kappa * p.speed[has] ** 2)) * p.train_flops[m] * p.batch
        net = [
            t.weight
            * (
                t.gap * t.rate * r * g
                - r * (t.noise * g * (1 / p.batch - 1 / d_n) + t.drift * g**3 + t.staleness * g)
            )
            - p.beta_e * e_flop * g
            for g in grid
        ]
        out[:, m] = grid[int(np.argmax(net))]
    seconds = p.compute_budget_s() * p.speed[:, None] / p.train_flops[None, :]
    cap = np.maximum(np.floor(seconds / p.batch), 1).astype(np.int64)
    return np.minimum(out, cap)


def plan(p: MaflProblem) -> Plan:
    """Schedule, then size: the SPEC's SCA recipe for one horizon."""
    c = candidates(p)
    gamma = starting_iterations(p)
    batch = np.full(p.samples.shape, p.batch, dtype=np.int64)
    k0 = coefficients(p, c, gamma, batch)
    if len(c.device) == 0:
        if p.min_sessions > 0:
            raise Infeasible("MA-FL: no device can run any session within the horizon")
        return Plan(c, np.zeros(0), gamma, batch, [], 0.0, [], objective(p, c, np.zeros(0), k0))
    relaxed, history = relax_schedule(p, c, k0)
    chosen = round_greedy(p, c, relaxed, k0)
    rounded = objective(p, c, chosen, k0)
    gamma, batch, sizing = size_sessions(p, c, chosen, gamma, batch)
    final = objective(p, c, chosen, coefficients(p, c, gamma, batch))
    return Plan(c, chosen, gamma, batch, history, rounded, sizing, final)

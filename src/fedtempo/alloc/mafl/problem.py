"""The MA-FL surrogate: each model's constants, the planning problem, its candidate sessions and
the objective J (see ``fedtempo.alloc.mafl``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class TaskTerms:
    """The constants of Psi_m for one model (loss in nats, progress in effective steps).
    ``dissimilarity`` z_n = zeta_n^2 / (zeta_n^2 + g^2), zeta_n^2 = ||g_n - g||^2."""

    gap: float  # G_m
    rate: float  # k_m, per effective server step
    spread: float  # A0_m, in data-share units
    batch_noise: float  # B_noise = sigma^2 / g^2, samples
    local_steps: float  # gamma0, local steps
    staleness: float  # xi, per server step
    weight: float = 1.0  # phi_m
    relative_loss: np.ndarray | None = None  # l_n: loss on device n's data / mean loss (N)
    drift_decay: float = 0.0  # delta: what each local step loses to drift, in steps
    dissimilarity: np.ndarray | None = None  # z_n in [0, 1): how far n's gradient strays (N)


def _terms_array(terms: tuple[TaskTerms, ...], name: str) -> np.ndarray:
    return np.array([getattr(t, name) for t in terms], dtype=float)


def effective_steps(
    gamma: np.ndarray,
    batch: np.ndarray,
    samples: np.ndarray,
    local_steps: np.ndarray | float,
    batch_noise: np.ndarray | float,
    drift_decay: np.ndarray | float = 0.0,
) -> np.ndarray:
    """h = (gamma0 log(1 + gamma / gamma0) - delta gamma) x B / (a B + B_noise), a = 1 -
    B_noise / D."""
    drift = _drift_factor(gamma, local_steps, drift_decay)
    return np.asarray(drift * batch_factor(batch, samples, batch_noise))


def _drift_factor(
    gamma: np.ndarray, local_steps: np.ndarray | float, drift_decay: np.ndarray | float = 0.0
) -> np.ndarray:
    """gamma0 log(1 + gamma / gamma0) - delta gamma: concave in gamma, rising to its peak at
    gamma0 (1 / delta - 1) and falling after it (delta = 0: saturating, never falling)."""
    return np.asarray(local_steps * np.log1p(gamma / local_steps) - drift_decay * gamma)


def drift_peak(local_steps: np.ndarray | float, drift_decay: np.ndarray | float) -> np.ndarray:
    """The gamma at which the drift factor peaks (inf where delta = 0)."""
    decay = np.asarray(drift_decay, dtype=float)
    with np.errstate(divide="ignore"):
        return np.asarray(np.where(decay > 0, local_steps * (1 / decay - 1), np.inf))


def visit_work(processed: np.ndarray | float, nominal: float) -> np.ndarray:
    """A session's weight as a visit: min(1, samples it trains on / the nominal session's).
    FedNova's objective inconsistency weighs a device by its visits times its local steps, so a
    session sized down to a few samples leaves its device as unrepresented as no session."""
    return np.asarray(np.minimum(1.0, np.asarray(processed, dtype=float) / max(nominal, 1.0)))


def _population(samples: np.ndarray, batch_noise: np.ndarray | float) -> np.ndarray:
    """a = 1 - B_noise / D, kept at least 0.05 (tiny datasets are all but noise-free anyway)."""
    return np.asarray(np.clip(1.0 - batch_noise / np.maximum(samples, 1.0), 0.05, 1.0))


def batch_factor(
    batch: np.ndarray, samples: np.ndarray, batch_noise: np.ndarray | float
) -> np.ndarray:
    return np.asarray(batch / (_population(samples, batch_noise) * batch + batch_noise))


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
    iterations: int  # nominal gamma (the session lengths were sized with it)
    batch: int  # B used while choosing the schedule
    max_iterations: int = 100
    min_iterations: int = 1  # the sizing's floor on gamma (where the latency allows it)
    batch_range: tuple[int, int] = (8, 128)
    energy_budget: float | None = None
    min_sessions: int = 0
    penalty: float | None = None  # mu; None: the mean |dJ/ds| at s = 0
    recent: np.ndarray | None = None  # sessions of (n, m) in the recent past (N x M)
    participation: float = 1.0  # weight of the participation term (0: off)
    visit_offset: float = 1.0  # c in rho z / (c + sessions)
    work_visits: bool = False  # a session counts as min(1, its samples / the nominal) visits
    balance: float = 0.0  # weight of the visit-balance term (0: off)

    @property
    def rho(self) -> np.ndarray:
        total = self.samples.sum(axis=0, keepdims=True)
        return np.asarray(
            np.divide(self.samples, total, out=np.zeros_like(self.samples), where=total > 0)
        )

    def energy(self, gamma: np.ndarray, batch: np.ndarray) -> np.ndarray:
        """Energy of one session of each (n, m) at (gamma, B) (N x M)."""
        per_flop = self.kappa * self.speed[:, None] ** 2
        return np.asarray(per_flop * self.train_flops[None, :] * batch * gamma + self.upload_j)

    @property
    def nominal_samples(self) -> int:
        """Samples of a session at the nominal gamma and B (what counts as one whole visit)."""
        return self.iterations * self.batch

    def work(self, gamma: np.ndarray, batch: np.ndarray) -> np.ndarray:
        """How much of a visit one session of each (n, m) at (gamma, B) is to the participation
        term (N x M): 1, or with ``work_visits`` ``visit_work`` of its gamma B samples."""
        if not self.work_visits:
            return np.ones(self.samples.shape)
        return visit_work(gamma * batch, self.nominal_samples)

    def compute_budget_s(self) -> np.ndarray:
        """Seconds of compute a session may take within its rounds (N x M)."""
        return np.asarray(self.session_rounds * self.round_s - self.comm_s)

    def steps(self, gamma: np.ndarray, batch: np.ndarray) -> np.ndarray:
        """h of one session of each (n, m) at (gamma, B) (N x M)."""
        return effective_steps(
            gamma.astype(float),
            batch.astype(float),
            self.samples,
            _terms_array(self.terms, "local_steps")[None, :],
            _terms_array(self.terms, "batch_noise")[None, :],
            _terms_array(self.terms, "drift_decay")[None, :],
        )

    def coverage(self) -> np.ndarray:
        """phi_m G_m rho_n z_n per (n, m) (N x M): what the participation term charges for a
        device's data left out (zeros where z is not measured or the term is off)."""
        out = np.zeros(self.samples.shape)
        for m, t in enumerate(self.terms):
            if t.dissimilarity is not None:
                out[:, m] = self.participation * t.weight * t.gap * t.dissimilarity
        return np.asarray(out * self.rho)

    def balance_weights(self) -> np.ndarray:
        """lambda phi_m G_m rho_n z_n / vbar_m^2 per (n, m) (N x M): what the visit-balance term
        charges per squared visit of a device away from its model's mean, with vbar_m the mean
        visits a device of m gets in the window if every model shares the free upload slots
        evenly (zeros where z is not measured, the device holds no data or the term is off)."""
        out = np.zeros(self.samples.shape)
        if self.balance <= 0:
            return out
        has = self.samples > 0
        past = np.zeros(self.samples.shape) if self.recent is None else self.recent
        free = float(np.sum(np.maximum(self.channels - self.channel_used, 0)))
        planned = free / max(len(self.terms), 1)
        for m, t in enumerate(self.terms):
            if t.dissimilarity is None or not has[:, m].any():
                continue
            mean = (float(past[has[:, m], m].sum()) + planned) / int(has[:, m].sum())
            out[:, m] = self.balance * t.weight * t.gap * t.dissimilarity / max(mean, 1.0) ** 2
        return np.asarray(out * self.rho)  # rho is 0 where a device holds no data

    def visits(self) -> np.ndarray:
        """c + the recent sessions of each (n, m) (N x M)."""
        past = np.zeros(self.samples.shape) if self.recent is None else self.recent
        return np.asarray(self.visit_offset + past, dtype=float)

    def share(self) -> np.ndarray:
        """w = rho l / (1 + xi (d - 1)) of a session of each (n, m) (N x M)."""
        xi = _terms_array(self.terms, "staleness")[None, :]
        local = np.ones(self.samples.shape)
        for m, t in enumerate(self.terms):
            if t.relative_loss is not None:
                local[:, m] = t.relative_loss
        return np.asarray(self.rho * local / (1.0 + xi * (self.session_rounds - 1)))


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
    """Per candidate: data weight w_i, effective steps h_i, energy, and its (model, upload
    round) slot m H + u; per model: G, k, A0, phi and the S-step's mean h."""

    share: np.ndarray
    steps: np.ndarray
    energy: np.ndarray
    slot: np.ndarray
    gap: np.ndarray
    rate: np.ndarray
    spread: np.ndarray
    weight: np.ndarray
    mean_steps: np.ndarray
    pair: np.ndarray  # n M + m of each candidate
    cover: np.ndarray  # phi G rho z per pair (N M)
    visits: np.ndarray  # c + recent sessions per pair (N M)
    work: np.ndarray  # per candidate: its weight as a visit (1 unless work_visits)
    balance: np.ndarray  # the visit-balance term's weight per pair (N M)
    member: np.ndarray  # per pair: the device holds data of the model (N M)


def coefficients(
    p: MaflProblem, c: Candidates, gamma: np.ndarray, batch: np.ndarray
) -> Coefficients:
    n, m = c.device, c.model
    n_mod, horizon = len(p.terms), p.available.shape[1]
    share, steps = p.share()[n, m], p.steps(gamma, batch)[n, m]
    total = np.bincount(m, weights=share, minlength=n_mod)
    mean = np.bincount(m, weights=share * steps, minlength=n_mod)
    return Coefficients(
        share=share,
        steps=steps,
        energy=p.energy(gamma, batch)[n, m],
        slot=m * horizon + c.upload,
        gap=_terms_array(p.terms, "gap"),
        rate=_terms_array(p.terms, "rate"),
        spread=np.maximum(_terms_array(p.terms, "spread"), 1e-9),
        weight=_terms_array(p.terms, "weight"),
        # a model whose mean session is past its drift peak moves by nothing per session in the
        # S-step (the concave relaxation needs mean h >= 0); its exact h stays as it is
        mean_steps=np.maximum(np.divide(mean, total, out=np.zeros(n_mod), where=total > 0), 0.0),
        pair=n * n_mod + m,
        cover=p.coverage().ravel(),
        visits=p.visits().ravel(),
        work=p.work(gamma, batch)[n, m],
        balance=p.balance_weights().ravel(),
        member=(p.samples > 0).ravel(),
    )


def arrival_weights(p: MaflProblem, k: Coefficients, s: np.ndarray) -> np.ndarray:
    """Per candidate at selection s: s_i w_i / (A_{m,u} + A0_m), its weight in its (model,
    upload round) slot's FedAvg step; times h_i it is the candidate's share of P_m."""
    slots = len(p.terms) * p.available.shape[1]
    arrivals = np.bincount(k.slot, weights=k.share * s, minlength=slots)
    return np.asarray(s * k.share / (arrivals[k.slot] + k.spread[k.slot // p.available.shape[1]]))


def _progress(p: MaflProblem, k: Coefficients, s: np.ndarray, mean: bool) -> np.ndarray:
    """P_m at selection s (exact, or with every session at its model's mean h: the S-step)."""
    n_mod, horizon = len(p.terms), p.available.shape[1]
    size = n_mod * horizon
    share = np.bincount(k.slot, weights=k.share * s, minlength=size).reshape(n_mod, horizon)
    if mean:
        moved = k.mean_steps[:, None] * share
    else:
        moved = np.bincount(k.slot, weights=k.share * k.steps * s, minlength=size)
        moved = moved.reshape(n_mod, horizon)
    return np.asarray((moved / (share + k.spread[:, None])).sum(axis=1))


def objective(
    p: MaflProblem, c: Candidates, s: np.ndarray, k: Coefficients, mean: bool = False
) -> float:
    """J at the (possibly fractional) selection s, without the binarity penalty; ``mean``: the
    S-step's form (every session of model m at the model's mean h)."""
    psi = k.weight * k.gap / (1 + k.rate * _progress(p, k, s, mean))
    extra = participation(k, s) + balance(k, s)
    return float(psi.sum() + extra + p.beta_e * (k.energy @ s))


def participation(k: Coefficients, s: np.ndarray) -> float:
    """sum over (n, m) of phi G rho z / (c + recent + planned sessions): under non-IID data,
    FedAvg over uneven visits converges to an objective that weighs the rarely visited devices
    less, by as much as their data strays (z). Convex and decreasing in the visit counts (each
    session counted by ``k.work``)."""
    planned = np.bincount(k.pair, weights=s * k.work, minlength=len(k.visits))
    return float((k.cover / (k.visits + planned)).sum())


def pair_models(k: Coefficients) -> tuple[np.ndarray, np.ndarray]:
    """Per pair (n M + m) its model m, and per model how many devices hold its data."""
    n_mod = len(k.weight)
    model = np.arange(len(k.visits)) % n_mod
    return model, np.bincount(model, weights=k.member, minlength=n_mod)


def visit_deviation(k: Coefficients, s: np.ndarray) -> np.ndarray:
    """Per pair: its visits (recent + planned at s) minus the mean over its model's devices
    with data (0 for pairs without data)."""
    n_mod = len(k.weight)
    model, members = pair_models(k)
    visits = k.visits + np.bincount(k.pair, weights=s * k.work, minlength=len(k.visits))
    total = np.bincount(model, weights=visits * k.member, minlength=n_mod)
    mean = np.divide(total, members, out=np.zeros(n_mod), where=members > 0)
    return np.asarray(np.where(k.member, visits - mean[model], 0.0))


def balance(k: Coefficients, s: np.ndarray) -> float:
    """sum over (n, m) of lambda phi G rho z ((v_n - mean v) / vbar)^2: FedAvg weighs each
    arrival by its data share, so it is unbiased when every device of a model is visited
    equally often; a device visited more (less) pulls the model towards (away from) its own
    optimum, by as much as its data strays (z). Convex in the visit counts: a sum of squares of
    affine functions, so SCA carries it as it is. The participation term only rewards visits;
    this one also charges for visiting one device over and over."""
    if not k.balance.any():
        return 0.0
    return float(k.balance @ visit_deviation(k, s) ** 2)


def balance_change(
    k: Coefficients, s: np.ndarray, pair: np.ndarray, work: np.ndarray
) -> np.ndarray:
    """The balance term's change when ``work`` more visits go to each of ``pair`` (one at a
    time, at selection s): every device of the model moves by -work / N_m from the new mean,
    and the visited one by work on top: -2 d S1 + d^2 S0 + lambda_p w (2 dev_p - 2 d + w), with
    d = w / N_m, S1 = sum lambda dev and S0 = sum lambda over the model's devices."""
    if not k.balance.any():
        return np.zeros(len(pair))
    n_mod = len(k.weight)
    model, members = pair_models(k)
    dev = visit_deviation(k, s)
    s1 = np.bincount(model, weights=k.balance * dev, minlength=n_mod)
    s0 = np.bincount(model, weights=k.balance * k.member, minlength=n_mod)
    m = pair % n_mod
    d = work / np.maximum(members[m], 1.0)
    own = k.balance[pair] * work * (2 * dev[pair] - 2 * d + work)
    return np.asarray(-2 * d * s1[m] + d**2 * s0[m] + own)

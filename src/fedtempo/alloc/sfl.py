"""Cut-layer selection and server compute allocation for split FL (SPEC section D).

Client n with cut l and server share phi_n:
    T_n = K_n b [Phi_c(l)/f_n + S(l)/R_up + S(l)/R_down + Phi_s(l)/(phi_n F)]
          + M(l)/R_up + M(l)/R_down
        = A_n(l) + B_n(l) / phi_n,
and the round lasts max_n T_n; minimise it over cuts and shares with sum phi_n <= 1.

Solvers (pure functions of an ``SflProblem``):
- ``share_server``: the shares for given cuts in closed form up to one root: phi_n = B_n/(tau - A_n)
  with tau solving sum B_n/(tau - A_n) = 1, which equalises the latencies of the clients that use
  the server (those with B_n = 0, plain FL, need no share);
- ``alternating``: the paper's method, shares given cuts, then each client's best cut given its
  share, until the max latency stops improving;
- ``optimal``: the exact optimum by bisection on the round latency tau. For a given tau each client
  independently needs at least min_l B_n(l)/(tau - A_n(l)) of the server, and tau is achievable iff
  these needs sum to at most 1; that sum does not increase with tau [design, ours];
- ``exhaustive``: every combination of cuts with its closed-form shares (small instances; the
  reference the other two are checked against);
- baselines: ``plain_fl``, ``fixed_cut`` (one cut for all, optimised shares), ``equal_shares``
  (phi = 1/N, optimised cuts), ``random_cuts`` (random cuts, optimised shares).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from fedtempo.errors import ConfigError


@dataclass(frozen=True)
class SflProblem:
    """Per-cut profiles (arrays over cuts 1..L, index cut - 1) and per-client resources.

    FLOPs and bits are per sample except ``client_bits`` (the client part's parameters); speeds
    in FLOP/s, rates in bit/s, ``iterations`` K_n and ``batch`` b per client.
    """

    client_flops: np.ndarray
    server_flops: np.ndarray
    smashed_bits: np.ndarray
    client_bits: np.ndarray
    speed: np.ndarray
    up: np.ndarray
    down: np.ndarray
    iterations: np.ndarray
    batch: np.ndarray
    server_speed: float

    def __post_init__(self) -> None:
        L, N = len(self.client_flops), len(self.speed)
        for name in ("server_flops", "smashed_bits", "client_bits"):
            if len(getattr(self, name)) != L:
                raise ValueError(f"{name} has {len(getattr(self, name))} cuts, client_flops {L}")
        for name in ("up", "down", "iterations", "batch"):
            if len(getattr(self, name)) != N:
                raise ValueError(f"{name} has {len(getattr(self, name))} clients, speed {N}")
        if not self.server_speed > 0:
            raise ConfigError(f"server compute must be > 0 FLOP/s, got {self.server_speed}")
        for name in ("speed", "up", "down"):
            bad = np.flatnonzero(~(np.asarray(getattr(self, name)) > 0))
            if len(bad):
                raise ConfigError(
                    f"client {int(bad[0])}: {name} must be > 0, got {getattr(self, name)[bad[0]]}"
                )
        if np.any(np.asarray(self.server_flops) < 0):
            raise ValueError("server FLOPs must be >= 0 at every cut")

    @property
    def clients(self) -> int:
        return len(self.speed)

    @property
    def num_cuts(self) -> int:
        return len(self.client_flops)

    def terms(self) -> tuple[np.ndarray, np.ndarray]:
        """(A, B), each clients x cuts: T_n(l, phi) = A[n, l-1] + B[n, l-1] / phi."""
        kb = (np.asarray(self.iterations, float) * np.asarray(self.batch, float))[:, None]
        up, down = np.asarray(self.up, float)[:, None], np.asarray(self.down, float)[:, None]
        s, m = self.smashed_bits[None, :], self.client_bits[None, :]
        a = kb * (self.client_flops[None, :] / np.asarray(self.speed, float)[:, None])
        a = a + kb * (s / up + s / down) + m / up + m / down
        b = kb * self.server_flops[None, :] / self.server_speed
        return a, b


@dataclass(frozen=True)
class SflAllocation:
    """Cuts (1..L), server shares, each client's latency and the round's (their max)."""

    policy: str
    cuts: np.ndarray
    shares: np.ndarray
    latency: np.ndarray
    history: list[float] = field(default_factory=list)  # max latency per iteration

    @property
    def round_latency(self) -> float:
        return float(np.max(self.latency))


def latencies(p: SflProblem, cuts: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """T_n for given cuts and shares; checks that both are legal."""
    cuts, shares = np.asarray(cuts), np.asarray(shares, dtype=np.float64)
    bad = np.flatnonzero((cuts < 1) | (cuts > p.num_cuts))
    if len(bad):
        raise ConfigError(
            f"client {int(bad[0])}: cut {int(cuts[bad[0]])} is not a legal cut (1..{p.num_cuts})"
        )
    if np.any(shares < 0) or shares.sum() > 1 + 1e-9:
        raise ConfigError(f"server shares must be >= 0 and sum to at most 1, got {shares.sum()}")
    a, b = p.terms()
    rows = np.arange(p.clients)
    a_n, b_n = a[rows, cuts - 1], b[rows, cuts - 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        extra = np.where(b_n > 0, b_n / shares, 0.0)
    return np.asarray(a_n + extra)


def share_server(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    """Shares minimising max_n a_n + b_n/phi_n with sum phi <= 1, and that max (tau)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    users = b > 0
    shares = np.zeros(len(a))
    if not users.any():
        return shares, float(a.max())
    au, bu = a[users], b[users]
    lo = float(au.max())
    hi = lo + float(bu.sum())  # there every term is <= b_n / sum(b) so the sum is <= 1

    from scipy.optimize import brentq  # here: importing scipy.optimize costs ~0.5 s

    def excess(tau: float) -> float:
        return float(np.sum(bu / (tau - au))) - 1.0

    tau = (
        hi
        if excess(hi) >= 0
        else brentq(
            excess, np.nextafter(lo, math.inf), hi, xtol=1e-14, rtol=4 * np.finfo(float).eps
        )
    )
    s = bu / (tau - au)
    shares[users] = s / max(1.0, float(s.sum()))  # rounding must not exceed the server
    return shares, max(float(tau), float(a[~users].max()) if (~users).any() else -math.inf)


def _best_cuts(a: np.ndarray, b: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Each client's best cut given its share (a client with no share can only train alone)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = a + np.where(b > 0, b / shares[:, None], 0.0)
    t = np.where((b > 0) & (shares[:, None] <= 0), np.inf, t)
    return np.asarray(np.argmin(t, axis=1) + 1)


def with_shares(p: SflProblem, cuts: np.ndarray, policy: str) -> SflAllocation:
    """The closed-form shares for fixed cuts."""
    a, b = p.terms()
    rows = np.arange(p.clients)
    cuts = np.asarray(cuts, dtype=np.int64)
    shares, _ = share_server(a[rows, cuts - 1], b[rows, cuts - 1])
    return SflAllocation(policy, cuts, shares, latencies(p, cuts, shares))


def alternating(p: SflProblem, max_iter: int = 50) -> SflAllocation:
    """Start from equal shares and each client's best cut for them; then alternate (a) the
    closed-form shares for the cuts and (b) each client's best cut for its share. Neither step
    can raise the round latency ((a) is optimal for the cuts; in (b) every client's current cut is
    among its options), so it stops when an iteration gains nothing. ``history``: the round
    latency after the start and after each step."""
    a, b = p.terms()
    best = equal_shares(p)
    history = [best.round_latency]
    for _ in range(max_iter):
        before = best.round_latency
        step = with_shares(p, best.cuts, "alternating")  # (a)
        cuts = _best_cuts(a, b, step.shares)  # (b)
        for cand in (
            step,
            SflAllocation("alternating", cuts, step.shares, latencies(p, cuts, step.shares)),
        ):
            history.append(min(history[-1], cand.round_latency))
            if cand.round_latency < best.round_latency:
                best = cand
        if not best.round_latency < before * (1 - 1e-12):
            break
    return SflAllocation("alternating", best.cuts, best.shares, best.latency, history)


def optimal(p: SflProblem, rtol: float = 1e-12) -> SflAllocation:
    """The exact optimum, by bisection on the round latency (see the module docstring)."""
    a, b = p.terms()

    def needs(tau: float) -> np.ndarray:  # clients x cuts: the share each cut needs for tau
        with np.errstate(divide="ignore", invalid="ignore"):
            need = np.where(a < tau, b / (tau - a), np.inf)
        return np.where(b > 0, need, np.where(a <= tau, 0.0, np.inf))

    lo = float(np.min(a, axis=1).max())  # no client can beat its fastest cut's A
    hi = float(a[:, -1].max())  # plain FL: no server needed, always feasible
    while hi - lo > rtol * hi:
        mid = 0.5 * (lo + hi)
        if np.sum(np.min(needs(mid), axis=1)) <= 1.0:
            hi = mid
        else:
            lo = mid
    cuts = np.argmin(needs(hi), axis=1) + 1
    return with_shares(p, cuts, "optimal")


def exhaustive(p: SflProblem, max_combinations: int = 2_000_000) -> SflAllocation:
    """Every combination of cuts, each with its closed-form shares; the best one."""
    count = p.num_cuts**p.clients
    if count > max_combinations:
        raise ConfigError(
            f"exhaustive search over {p.num_cuts}^{p.clients} = {count:,} cut combinations is "
            f"over the limit of {max_combinations:,}; use 'optimal' (exact) instead"
        )
    a, b = p.terms()
    best_tau, best_cuts = math.inf, None
    combos = itertools.product(range(p.num_cuts), repeat=p.clients)
    rows = np.arange(p.clients)
    for chunk in _chunks(combos, 65_536):
        idx = np.asarray(chunk)  # combinations x clients, cut - 1
        tau = _taus(a[rows, idx], b[rows, idx])
        i = int(np.argmin(tau))
        if tau[i] < best_tau:
            best_tau, best_cuts = float(tau[i]), idx[i] + 1
    assert best_cuts is not None
    return with_shares(p, best_cuts, "exhaustive")


def _chunks(it: Iterator[tuple[int, ...]], size: int) -> Iterator[list[tuple[int, ...]]]:
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _taus(a: np.ndarray, b: np.ndarray, iters: int = 200) -> np.ndarray:
    """Vectorised share_server's tau for many rows (combinations) at once, by bisection."""
    users = b > 0
    alone = np.where(users, -np.inf, a).max(axis=1)
    lo = np.where(users, a, -np.inf).max(axis=1)
    hi = lo + b.sum(axis=1)
    has = users.any(axis=1)
    lo, hi = np.where(has, lo, 0.0), np.where(has, hi, 0.0)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            gap = np.where(users, mid[:, None] - a, 1.0)
            s = np.where(users, b / gap, 0.0)
            total = np.where((gap <= 0).any(axis=1), np.inf, s.sum(axis=1))
        ok = total <= 1.0
        hi, lo = np.where(ok, mid, hi), np.where(ok, lo, mid)
    return np.asarray(np.maximum(np.where(has, hi, -np.inf), alone))


def plain_fl(p: SflProblem) -> SflAllocation:
    cuts = np.full(p.clients, p.num_cuts)
    return SflAllocation(
        "plain_fl", cuts, np.zeros(p.clients), latencies(p, cuts, np.zeros(p.clients))
    )


def fixed_cut(p: SflProblem, cut: int) -> SflAllocation:
    return with_shares(p, np.full(p.clients, cut), f"fixed_cut_{cut}")


def equal_shares(p: SflProblem) -> SflAllocation:
    a, b = p.terms()
    shares = np.full(p.clients, 1.0 / p.clients)
    cuts = _best_cuts(a, b, shares)
    return SflAllocation("equal_shares", cuts, shares, latencies(p, cuts, shares))


def random_cuts(p: SflProblem, rng: np.random.Generator) -> SflAllocation:
    return with_shares(p, rng.integers(1, p.num_cuts + 1, size=p.clients), "random_cuts")

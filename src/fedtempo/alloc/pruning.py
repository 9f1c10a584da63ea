"""Pruning ratios and bandwidth for partial-model pruning (SPEC section E; Liu, Ratnarajah,
Sellathurai, Eldar 2023), by the KKT conditions.

Per round: minimise sum_n w_n rho_n subject to, for every device n,
    T_v,n + (1 - rho_n) (T_u,n + S_u / r_n(B_n)) <= T_th,   0 <= rho_n <= rho_max,
and sum_n B_n <= B. Given B_n the best rho_n is [1 - c_n / (T_u,n + S_u / r_n(B_n))]^+ with
c_n = T_th - T_v,n; that is convex and decreasing in B_n, so the problem is a convex resource
allocation: each B_n solves w_n (-d rho_n / d B_n) = lambda, clipped to [B_min,n, B_sat,n]
(B_min: rho_n = rho_max; B_sat: rho_n = 0), and lambda is found by bisection so that
sum B_n = B. Linear rate r = s B: closed form. Shannon rate r = B log2(1 + p g / (N0 B)): a
1-D root per device.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

LN2 = math.log(2.0)


class Infeasible(ValueError):
    """No allocation meets the latency threshold; the message names the devices and why."""


@dataclass(frozen=True)
class PruningProblem:
    """One round's instance. Times in s, S_u in bits, bandwidth in Hz; ``rate`` is 'linear'
    (``s``: bit/s per Hz) or 'shannon' (``snr_per_hz`` = p g / N0, so r = B log2(1 + snr/B))."""

    weights: np.ndarray  # w_n
    t_global: np.ndarray  # T_u,n: unpruned global-part compute time
    t_personal: np.ndarray  # T_v,n: personal-part compute time
    model_bits: float  # S_u
    threshold: float  # T_th
    bandwidth: float  # B
    rho_max: float = 0.9
    rate: str = "linear"
    s: np.ndarray | None = None
    snr_per_hz: np.ndarray | None = None

    def rate_of(self, n: int, b: float) -> float:
        if b <= 0:
            return 0.0
        if self.rate == "linear":
            assert self.s is not None
            return float(self.s[n] * b)
        assert self.snr_per_hz is not None
        return float(b * math.log2(1.0 + self.snr_per_hz[n] / b))

    def rho(self, n: int, b: float) -> float:
        """Smallest pruning ratio meeting the latency threshold with bandwidth b (may exceed
        rho_max, meaning infeasible)."""
        r = self.rate_of(n, b)
        if r <= 0:
            return math.inf
        c = self.threshold - self.t_personal[n]
        return float(max(0.0, 1.0 - c / (self.t_global[n] + self.model_bits / r)))

    def latency(self, n: int, rho: float, b: float) -> float:
        r = self.rate_of(n, b)
        upload = self.model_bits / r if r > 0 else math.inf
        return float(self.t_personal[n] + (1.0 - rho) * (self.t_global[n] + upload))


@dataclass(frozen=True)
class PruningAllocation:
    rho: np.ndarray
    bandwidth: np.ndarray
    objective: float
    multiplier: float


def _needed_rates(p: PruningProblem, rho: float) -> np.ndarray:
    """Per device, the rate at which it meets the threshold with ratio rho (inf if none)."""
    room = (p.threshold - p.t_personal) / (1.0 - rho) - p.t_global
    with np.errstate(divide="ignore"):
        return np.where(room > 0, p.model_bits / np.maximum(room, 1e-300), np.inf)


def _log_newton(
    f: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    xl: np.ndarray,
    xh: np.ndarray,
    x0: np.ndarray | None = None,
) -> np.ndarray:
    """Per entry, the root of an increasing f on [xl, xh] (f(xl) <= 0 <= f(xh)); f returns
    (value, slope). Newton steps from x0 (default: mid-bracket), replaced by bisection whenever
    one leaves the bracket."""
    x = 0.5 * (xl + xh) if x0 is None else np.clip(x0, xl, xh)
    for _ in range(200):
        g, dg = f(x)
        xl, xh = np.where(g < 0, x, xl), np.where(g > 0, x, xh)
        with np.errstate(divide="ignore", invalid="ignore"):
            nx = x - g / dg
        bad = ~np.isfinite(nx) | (nx <= xl) | (nx >= xh)
        nx = np.where(bad, 0.5 * (xl + xh), nx)
        moved = np.abs(nx - x)
        x = nx
        if np.all((moved <= 1e-14 * np.maximum(1.0, np.abs(x))) | (g == 0)):
            break
    return np.asarray(x)


def _rate_terms(p: PruningProblem, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """r(B), r'(B) and r''(B) per device (Shannon rate)."""
    assert p.snr_per_hz is not None
    u = p.snr_per_hz / b
    log1p = np.log2(1.0 + u)
    v = u / ((1.0 + u) * LN2)
    return b * log1p, log1p - v, -(v * v * LN2) / b


def _bandwidths_for_rates(p: PruningProblem, rates: np.ndarray) -> np.ndarray:
    """Per device, the bandwidth giving ``rates`` (inf where no bandwidth can)."""
    if p.rate == "linear":
        assert p.s is not None
        return np.asarray(rates / p.s)
    assert p.snr_per_hz is not None
    out = np.full(len(rates), np.inf)
    ok = np.isfinite(rates) & (rates < p.snr_per_hz / LN2)  # r(B) -> snr / ln 2 as B -> inf
    if not ok.any():
        return out
    sub = dataclasses.replace(p, snr_per_hz=p.snr_per_hz[ok])
    target = rates[ok]
    xl, xh = np.log(target) - 60.0, np.log(target)
    while True:
        low = _rate_terms(sub, np.exp(xh))[0] < target
        if not low.any():
            break
        xh = np.where(low, xh + 2.0, xh)

    def f(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b = np.exp(x)
        r, slope, _ = _rate_terms(sub, b)
        return np.log(r) - np.log(target), b * slope / r

    out[ok] = np.exp(_log_newton(f, xl, xh))
    return out


def _marginals(p: PruningProblem, b: np.ndarray) -> np.ndarray:
    """w_n (-d rho_n / d B_n) per device, where rho_n > 0."""
    c = p.threshold - p.t_personal
    if p.rate == "linear":
        assert p.s is not None
        r, slope = p.s * b, p.s
    else:
        r, slope, _ = _rate_terms(p, b)
    return np.asarray(p.weights * c * p.model_bits * slope / (p.t_global * r + p.model_bits) ** 2)


def _bandwidths_at(
    p: PruningProblem, lam: float, lo: np.ndarray, hi: np.ndarray, warm: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """B_n(lambda): where each device's marginal gain equals lambda, clipped to [lo, hi]; and
    dB_n / d log lambda (0 where clipped). ``warm``: log B_n of a nearby lambda, to start from."""
    c, su = p.threshold - p.t_personal, p.model_bits
    if p.rate == "linear":
        assert p.s is not None
        root = np.sqrt(p.weights * c * p.s * su / lam)
        b = (root - su) / (p.t_global * p.s)
        inside = (b > lo) & (b < hi)
        deriv = np.where(inside, -0.5 * root / (p.t_global * p.s), 0.0)
        return np.minimum(np.maximum(b, lo), hi), deriv
    out = np.where(_marginals(p, lo) <= lam, lo, np.nan)
    fin = np.isfinite(hi)
    top = np.where(fin, hi, 1.0)
    out = np.where(np.isnan(out) & fin & (_marginals(p, top) >= lam), hi, out)
    deriv = np.zeros(len(out))
    todo = np.isnan(out)
    if not todo.any():
        return out, deriv
    sub = _pick(p, todo)
    lo_t, hi_t = lo[todo], hi[todo]
    xl = np.log(lo_t)
    xh = np.log(np.where(np.isfinite(hi_t), hi_t, np.maximum(lo_t, 1.0)))
    while True:  # an upper bracket where hi is unbounded: the marginal falls to 0 as B grows
        high = _marginals(sub, np.exp(xh)) > lam
        if not high.any():
            break
        xh = np.where(high, xh + 2.0, xh)
    t, k, log_lam = sub.t_global, sub.weights * (sub.threshold - sub.t_personal) * su, math.log(lam)

    def f(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b = np.exp(x)
        r, slope, curve = _rate_terms(sub, b)
        d = t * r + su
        dlog = b * (curve / slope - 2.0 * t * slope / d)  # d log m / d log B (< 0)
        return log_lam - np.log(k * slope / (d * d)), -dlog

    x = _log_newton(f, xl, xh, None if warm is None else warm[todo])
    out[todo] = np.exp(x)
    deriv[todo] = out[todo] / -f(x)[1]
    return out, deriv


def _pick(p: PruningProblem, keep: np.ndarray) -> PruningProblem:
    return dataclasses.replace(
        p,
        weights=p.weights[keep],
        t_global=p.t_global[keep],
        t_personal=p.t_personal[keep],
        s=None if p.s is None else p.s[keep],
        snr_per_hz=None if p.snr_per_hz is None else p.snr_per_hz[keep],
    )


def _multiplier(p: PruningProblem, lo: np.ndarray, hi: np.ndarray) -> tuple[float, np.ndarray]:
    """lambda with sum_n B_n(lambda) = B, on its feasible side, and the B_n: Newton on
    t = log lambda from the marginal gains at equal shares, safeguarded by the bracket found so
    far; every inner solve starts from the previous one's bandwidths."""
    warm: list[np.ndarray | None] = [None]

    def excess(t: float) -> tuple[float, float, np.ndarray]:
        b, deriv = _bandwidths_at(p, math.exp(t), lo, hi, warm[0])
        warm[0] = np.log(b)
        return float(b.sum()) - p.bandwidth, float(deriv.sum()), b

    share = np.clip(np.full(len(lo), p.bandwidth / len(lo)), lo, np.minimum(hi, p.bandwidth))
    t = math.log(float(np.mean(_marginals(p, share))))
    t_lo, t_hi = -math.inf, math.inf
    for _ in range(200):
        e, de, b = excess(t)
        if abs(e) <= 1e-13 * p.bandwidth:
            break
        if e > 0:  # too much bandwidth handed out: lambda must rise
            t_lo = t
        else:
            t_hi = t
        # Newton on log(sum B_n) - log B: sum B_n(lambda) is close to a power of lambda
        total = e + p.bandwidth
        nt = t - math.log(total / p.bandwidth) * total / de if de < 0 else math.nan
        if not t_lo < nt < t_hi:
            if math.isfinite(t_lo) and math.isfinite(t_hi):
                nt = 0.5 * (t_lo + t_hi)
            else:
                nt = t + (4.0 if e > 0 else -4.0)
        if abs(nt - t) <= 1e-15 * max(1.0, abs(t)):
            break
        t = nt
    while e > 0:  # land on the feasible side of the root
        t += 1e-13 * max(1.0, abs(t))
        e, _, b = excess(t)
    return math.exp(t), b


def solve_pruning(p: PruningProblem) -> PruningAllocation:
    """The optimal (rho, B) of one round, or Infeasible naming the devices that cannot make it.
    lambda solves sum_n B_n(lambda) = B."""
    lo = _bandwidths_for_rates(p, _needed_rates(p, p.rho_max))
    hopeless = [int(n) for n in np.flatnonzero(~np.isfinite(lo))]
    if hopeless:
        raise Infeasible(
            f"devices {hopeless} cannot meet T_th = {p.threshold} s even pruned to "
            f"rho_max = {p.rho_max} with unlimited bandwidth"
        )
    if lo.sum() > p.bandwidth * (1 + 1e-12):
        raise Infeasible(
            f"the devices need {lo.sum():.6g} Hz at rho_max = {p.rho_max}, "
            f"more than the total bandwidth {p.bandwidth:.6g} Hz"
        )
    hi = _bandwidths_for_rates(p, _needed_rates(p, 0.0))
    if np.all(np.isfinite(hi)) and hi.sum() <= p.bandwidth:
        b, lam = hi, 0.0  # bandwidth is plentiful: nobody needs to prune
    else:
        lam, b = _multiplier(p, lo, hi)
    rho = np.array([min(p.rho(n, float(b[n])), p.rho_max) for n in range(len(b))])
    rho[b >= hi * (1.0 - 1e-12)] = 0.0  # at saturation: no pruning (not a rounding residue)
    return PruningAllocation(rho, b, float(np.dot(p.weights, rho)), lam)


def equal_share(p: PruningProblem, ratio: float) -> PruningAllocation:
    """The baseline allocation: every device prunes ``ratio`` (0: no pruning) and gets B / N.
    The latency threshold is not enforced (the caller measures what it costs)."""
    count = len(p.weights)
    rho = np.full(count, float(ratio))
    b = np.full(count, p.bandwidth / count)
    return PruningAllocation(rho, b, float(np.dot(p.weights, rho)), 0.0)


def subproblem(p: PruningProblem, keep: list[int]) -> PruningProblem:
    """The same round restricted to the devices ``keep`` (all of the bandwidth stays)."""
    return _pick(p, np.asarray(keep, dtype=np.int64))


def solve_admitting(p: PruningProblem) -> tuple[PruningAllocation, list[int]]:
    """solve_pruning over the largest set of devices that can be served: a device that cannot
    meet T_th even at rho_max with all the bandwidth is left out, then, while the devices' need
    at rho_max exceeds B, the one needing the most bandwidth is left out. Returns the
    allocation over every device (left-out ones get rho = 1 and no bandwidth: they skip the
    round) and the left-out devices' indices, increasing."""
    count = len(p.weights)
    need = _bandwidths_for_rates(p, _needed_rates(p, p.rho_max))
    keep = [n for n in range(count) if math.isfinite(need[n])]
    while keep and need[keep].sum() > p.bandwidth * (1 + 1e-12):
        keep.remove(max(keep, key=lambda n: (need[n], n)))
    out = [n for n in range(count) if n not in keep]
    rho, b = np.ones(count), np.zeros(count)
    if keep:
        alloc = solve_pruning(subproblem(p, keep))
        rho[keep], b[keep] = alloc.rho, alloc.bandwidth
        lam = alloc.multiplier
    else:
        lam = math.inf
    return PruningAllocation(rho, b, float(np.dot(p.weights, rho)), lam), out


def solve_pruning_slsqp(p: PruningProblem) -> tuple[PruningAllocation, bool]:
    """Reference: scipy's SLSQP on the smooth formulation (variables rho and B / B_total, the
    latency constraint as written), started from rho_max and equal shares. Returns the
    allocation and whether SLSQP converged to a feasible point (latency slack >= -1e-6)."""
    n = len(p.weights)

    def latency_slack(z: np.ndarray) -> np.ndarray:
        rho, b = z[:n], np.maximum(z[n:], 1e-12) * p.bandwidth
        return np.array([p.threshold - p.latency(i, rho[i], b[i]) for i in range(n)])

    cons = [
        {"type": "ineq", "fun": latency_slack},
        {"type": "ineq", "fun": lambda z: 1.0 - z[n:].sum()},
    ]
    z0 = np.concatenate([np.full(n, p.rho_max), np.full(n, 1.0 / n)])
    from scipy.optimize import minimize  # only the reference solver needs scipy

    res = minimize(
        lambda z: float(np.dot(p.weights, z[:n])),
        z0,
        method="SLSQP",
        bounds=[(0, p.rho_max)] * n + [(1e-9, 1.0)] * n,
        constraints=cons,
        options={"ftol": 1e-12, "maxiter": 1000},
    )
    ok = bool(res.success and np.all(latency_slack(res.x) >= -1e-6))
    alloc = PruningAllocation(res.x[:n], res.x[n:] * p.bandwidth, float(res.fun), math.nan)
    return alloc, ok

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

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq


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

    def rate_slope(self, n: int, b: float) -> float:
        """dr/dB."""
        if self.rate == "linear":
            assert self.s is not None
            return float(self.s[n])
        assert self.snr_per_hz is not None
        q = self.snr_per_hz[n] / b
        return float(math.log2(1.0 + q) - q / ((1.0 + q) * math.log(2.0)))

    def rho(self, n: int, b: float) -> float:
        """Smallest pruning ratio meeting the latency threshold with bandwidth b (may exceed
        rho_max, meaning infeasible)."""
        r = self.rate_of(n, b)
        if r <= 0:
            return math.inf
        c = self.threshold - self.t_personal[n]
        return max(0.0, 1.0 - c / (self.t_global[n] + self.model_bits / r))

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


def _needed_rate(p: PruningProblem, n: int, rho: float) -> float:
    """Rate at which device n meets the threshold with ratio rho (inf if impossible)."""
    c = p.threshold - p.t_personal[n]
    room = c / (1.0 - rho) - p.t_global[n]
    return p.model_bits / room if room > 0 else math.inf


def _bandwidth_for_rate(p: PruningProblem, n: int, rate: float) -> float:
    if math.isinf(rate):
        return math.inf
    if p.rate == "linear":
        assert p.s is not None
        return rate / float(p.s[n])
    assert p.snr_per_hz is not None
    cap = p.snr_per_hz[n] / math.log(2.0)  # r(B) -> snr / ln 2 as B -> inf
    if rate >= cap:
        return math.inf
    hi = 1.0
    while p.rate_of(n, hi) < rate:
        hi *= 2.0
    return float(brentq(lambda b: p.rate_of(n, b) - rate, 1e-12 * hi, hi, xtol=1e-12 * hi))


def _marginal(p: PruningProblem, n: int, b: float) -> float:
    """w_n (-d rho_n / d B_n) where rho_n > 0."""
    r = p.rate_of(n, b)
    c = p.threshold - p.t_personal[n]
    return float(
        p.weights[n]
        * c
        * p.model_bits
        * p.rate_slope(n, b)
        / (p.t_global[n] * r + p.model_bits) ** 2
    )


def _bandwidth_at(p: PruningProblem, n: int, lam: float, lo: float, hi: float) -> float:
    """B_n(lambda): the bandwidth where the marginal gain equals lambda, clipped to [lo, hi]."""
    if p.rate == "linear":
        assert p.s is not None
        c = p.threshold - p.t_personal[n]
        s, su = float(p.s[n]), p.model_bits
        b = (math.sqrt(p.weights[n] * c * s * su / lam) - su) / (p.t_global[n] * s)
        return min(max(b, lo), hi)
    if _marginal(p, n, lo) <= lam:
        return lo
    if math.isinf(hi):
        hi = max(lo, 1.0)
        while _marginal(p, n, hi) > lam:
            hi *= 2.0
    elif _marginal(p, n, hi) >= lam:
        return hi
    return float(brentq(lambda b: _marginal(p, n, b) - lam, lo, hi, xtol=1e-12 * hi))


def solve_pruning(p: PruningProblem, tol: float = 1e-12) -> PruningAllocation:
    """The optimal (rho, B) of one round, or Infeasible naming the devices that cannot make it."""
    count = len(p.weights)
    lo = np.array([_bandwidth_for_rate(p, n, _needed_rate(p, n, p.rho_max)) for n in range(count)])
    hopeless = [n for n in range(count) if math.isinf(lo[n])]
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
    hi = np.array([_bandwidth_for_rate(p, n, _needed_rate(p, n, 0.0)) for n in range(count)])
    if np.all(np.isfinite(hi)) and hi.sum() <= p.bandwidth:
        b, lam = hi, 0.0  # bandwidth is plentiful: nobody needs to prune
    else:

        def total(lam: float) -> float:
            return sum(_bandwidth_at(p, n, lam, lo[n], hi[n]) for n in range(count))

        lam_hi = max(_marginal(p, n, lo[n]) for n in range(count)) * 2.0 + 1e-300
        lam_lo = lam_hi
        while total(lam_lo) < p.bandwidth:
            lam_lo /= 2.0
        for _ in range(200):  # bisection in log space: lambda spans many decades
            mid = math.sqrt(lam_lo * lam_hi)
            if total(mid) > p.bandwidth:
                lam_lo = mid
            else:
                lam_hi = mid
            if lam_hi / lam_lo - 1.0 < tol:
                break
        lam = lam_hi
        b = np.array([_bandwidth_at(p, n, lam, lo[n], hi[n]) for n in range(count)])
    rho = np.array([min(p.rho(n, float(b[n])), p.rho_max) for n in range(count)])
    rho[b >= hi * (1.0 - 1e-12)] = 0.0  # at saturation: no pruning (not a rounding residue)
    return PruningAllocation(rho, b, float(np.dot(p.weights, rho)), lam)

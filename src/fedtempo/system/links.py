"""Links: trace-driven throughput, a wireless channel (Shannon rate), constant rates.

All rates are bit/s and durations seconds of virtual time. A link answers, for client n and a
transfer of B bits starting at t, how long it takes; and gives the instantaneous rate at a
bandwidth share (used by a shared uplink).
"""

from __future__ import annotations

import bisect
import functools
import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fedtempo.rng import Streams


class Link(Protocol):
    """One direction of every client's link. Units: bits, seconds, bit/s; ``now`` is the
    transfer's start on the driver's clock. Contract: ``transfer_time`` > 0 for bits > 0 and
    non-decreasing in bits; ``rate_bps`` > 0 at any share in (0, 1]."""

    def transfer_time(self, client: int, bits: float, now: float) -> float:
        """Seconds to move ``bits`` starting at ``now`` (rates may vary during it)."""
        ...

    def rate_bps(self, client: int, now: float, share: float = 1.0) -> float:
        """The rate at ``now`` with ``share`` of the link's bandwidth."""
        ...

    def mean_rate_bps(self, client: int) -> float:
        """The long-run mean rate (what a planner uses when it does not look at ``now``)."""
        ...


# ---- pure formulas (SPEC section 0) -----------------------------------------------------------


def path_loss_db(distance_km: float) -> float:
    """Urban macro-cell path loss 128.1 + 37.6 log10(d_km) dB (3GPP TR 36.814)."""
    return 128.1 + 37.6 * math.log10(distance_km)


def dbm_to_watt(dbm: float) -> float:
    return float(10.0 ** ((dbm - 30.0) / 10.0))


def shannon_rate(bandwidth_hz: float, power_w: float, gain: float, noise_w_per_hz: float) -> float:
    """R = W log2(1 + p g / (N0 W)) in bit/s."""
    if bandwidth_hz <= 0:
        return 0.0
    return bandwidth_hz * math.log2(1.0 + power_w * gain / (noise_w_per_hz * bandwidth_hz))


# ---- trace-driven throughput ------------------------------------------------------------------


@dataclass(frozen=True)
class ThroughputTrace:
    """Piecewise-constant throughput, repeated forever (wraps around at ``period``).

    Segment i runs from ``starts[i]`` to ``starts[i+1]``; the last segment lasts as long as the
    one before it (1 s for a one-sample trace). ``cum[i]`` = bits deliverable from 0 to starts[i].
    """

    starts: np.ndarray
    bps: np.ndarray
    period: float
    cum: np.ndarray

    @classmethod
    def from_samples(cls, times: np.ndarray, mbps: np.ndarray) -> ThroughputTrace:
        t = np.asarray(times, dtype=np.float64) - float(times[0])
        last = t[-1] - t[-2] if len(t) > 1 and t[-1] > t[-2] else 1.0
        ends = np.append(t[1:], t[-1] + last)
        bps = np.asarray(mbps, dtype=np.float64) * 1e6
        cum = np.concatenate([[0.0], np.cumsum(bps * (ends - t))])
        return cls(t, bps, float(ends[-1]), cum)

    @property
    def mean_bps(self) -> float:
        return float(self.cum[-1] / self.period)

    @functools.cached_property
    def _lists(self) -> tuple[list[float], list[float], list[float]]:
        # Python lists for the per-transfer lookups: bisect on a list is a few times cheaper
        # than a NumPy call on a scalar, with the same comparisons and float arithmetic
        return self.starts.tolist(), self.bps.tolist(), self.cum.tolist()

    def rate_at(self, t: float) -> float:
        starts, bps, _ = self._lists
        return bps[bisect.bisect_right(starts, float(t) % self.period) - 1]

    def _bits_until(self, offset: float) -> float:
        """Bits deliverable from the period's start to ``offset`` (0 <= offset < period)."""
        starts, bps, cum = self._lists
        i = bisect.bisect_right(starts, offset) - 1
        return cum[i] + (offset - starts[i]) * bps[i]

    def _time_of(self, bits: float) -> float:
        """Earliest time within a period by which ``bits`` (0 < bits <= per period) are sent."""
        starts, bps, cum = self._lists
        j = bisect.bisect_left(cum, bits)
        if cum[j] == bits:
            return starts[j] if j < len(starts) else self.period
        return starts[j - 1] + (bits - cum[j - 1]) / bps[j - 1]

    def transfer_time(self, bits: float, start: float) -> float:
        """Seconds to send ``bits`` starting at time ``start``, integrating the trace."""
        if bits <= 0:
            return 0.0
        per_period = self._lists[2][-1]
        offset = float(start) % self.period
        target = self._bits_until(offset) + bits
        cycles, rest = divmod(target, per_period)
        if rest == 0.0:  # ends exactly when a period's last bit is sent
            cycles, rest = cycles - 1, per_period
        return cycles * self.period + self._time_of(rest) - offset


@dataclass(frozen=True)
class TraceLink:
    """Each client follows one trace (``assignment``) from its own start ``offset``, its rate
    multiplied by ``scale``."""

    traces: list[ThroughputTrace]
    assignment: np.ndarray
    offset: np.ndarray
    scale: float = 1.0

    def _trace(self, client: int) -> ThroughputTrace:
        return self.traces[int(self.assignment[client])]

    def transfer_time(self, client: int, bits: float, now: float) -> float:
        return self._trace(client).transfer_time(bits / self.scale, now + self.offset[client])

    def rate_bps(self, client: int, now: float, share: float = 1.0) -> float:
        return share * self.scale * self._trace(client).rate_at(now + self.offset[client])

    def mean_rate_bps(self, client: int) -> float:
        return self.scale * self._trace(client).mean_bps


@dataclass(frozen=True)
class ConstantLink:
    """A fixed rate per client (bit/s)."""

    rates: np.ndarray

    def transfer_time(self, client: int, bits: float, now: float) -> float:
        return bits / float(self.rates[client])

    def rate_bps(self, client: int, now: float, share: float = 1.0) -> float:
        return share * float(self.rates[client])

    def mean_rate_bps(self, client: int) -> float:
        return float(self.rates[client])


@dataclass(frozen=True)
class WirelessLink:
    """A wireless link per client: distance, transmit power, bandwidth; Rayleigh fading
    |h|^2 ~ Exp(1) and log-normal shadowing redrawn every ``coherence_s`` of virtual time
    (set it to the round length to redraw per round). A transfer keeps the rate drawn at its
    start. ``direction`` separates the fading streams of uplink (0) and downlink (1)."""

    distance_m: np.ndarray
    power_w: float
    bandwidth_hz: float
    streams: Streams
    shadowing_db: float = 8.0
    coherence_s: float = 10.0
    noise_dbm_hz: float = -174.0
    direction: int = 0

    def snr_per_hz(self, client: int, now: float) -> float:
        """p g / N0 at ``now``: the client's received SNR per Hz of bandwidth (what a bandwidth
        allocation needs to know of the channel)."""
        return self.power_w * self.gain(client, now) / dbm_to_watt(self.noise_dbm_hz)

    def gain(self, client: int, now: float) -> float:
        """Channel power gain (linear) of ``client`` in the coherence block holding ``now``."""
        block = int(now // self.coherence_s)
        rng = self.streams.numpy("channel", self.direction, client, block)
        fading = rng.exponential(1.0)
        shadow = rng.normal(0.0, self.shadowing_db) if self.shadowing_db > 0 else 0.0
        loss_db = path_loss_db(float(self.distance_m[client]) / 1000.0)
        return float(10.0 ** ((shadow - loss_db) / 10.0) * fading)

    def rate_bps(self, client: int, now: float, share: float = 1.0) -> float:
        n0 = dbm_to_watt(self.noise_dbm_hz)
        return shannon_rate(share * self.bandwidth_hz, self.power_w, self.gain(client, now), n0)

    def transfer_time(self, client: int, bits: float, now: float) -> float:
        return bits / self.rate_bps(client, now)

    def mean_rate_bps(self, client: int) -> float:
        """Rate at the mean gain over 64 coherence blocks (for population summaries)."""
        return float(np.mean([self.rate_bps(client, b * self.coherence_s) for b in range(64)]))

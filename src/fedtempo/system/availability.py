"""Availability: when a client can train. Always on, or FLASH-style ready intervals."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Availability(Protocol):
    """When each client is ready to train. Times are seconds on the driver's clock (virtual
    time 0 = the run's start); contract: ``window_end(c, t)`` is None or > t, and
    ``next_start(c, t)`` is >= t, equal to t exactly when ``window_end(c, t)`` is not None."""

    def window_end(self, client: int, t: float) -> float | None:
        """End of the ready window holding ``t``; None if not available at ``t``."""
        ...

    def next_start(self, client: int, t: float) -> float:
        """Earliest time >= t at which the client is available (inf if never)."""
        ...

    def fraction(self, client: int, horizon: float) -> float:
        """Share of [0, horizon) during which the client is available."""
        ...


class AlwaysOn:
    def window_end(self, client: int, t: float) -> float | None:
        return math.inf

    def next_start(self, client: int, t: float) -> float:
        return t

    def fraction(self, client: int, horizon: float) -> float:
        return 1.0


@dataclass(frozen=True)
class IntervalAvailability:
    """Client n follows ready intervals ``intervals[assignment[n]]`` (seconds from its trace
    start), shifted so that virtual time 0 is trace time ``offset[n]``; the trace repeats every
    ``period[k]`` seconds (its last interval end, at least)."""

    intervals: list[np.ndarray]
    assignment: np.ndarray
    offset: np.ndarray
    period: np.ndarray

    def _local(self, client: int, t: float) -> tuple[np.ndarray, float, float]:
        k = int(self.assignment[client])
        period = float(self.period[k])
        cycle, tau = divmod(t + float(self.offset[client]), period)
        return self.intervals[k], tau, cycle * period - float(self.offset[client])

    def window_end(self, client: int, t: float) -> float | None:
        iv, tau, base = self._local(client, t)
        i = int(np.searchsorted(iv[:, 0], tau, side="right")) - 1
        if i >= 0 and tau < iv[i, 1]:
            return base + float(iv[i, 1])
        return None

    def next_start(self, client: int, t: float) -> float:
        if self.window_end(client, t) is not None:
            return t
        iv, tau, base = self._local(client, t)
        i = int(np.searchsorted(iv[:, 0], tau, side="right"))
        if i < len(iv):
            return base + float(iv[i, 0])
        k = int(self.assignment[client])
        return base + float(self.period[k]) + float(iv[0, 0])

    def fraction(self, client: int, horizon: float) -> float:
        if horizon <= 0:
            return 0.0
        total, t = 0.0, 0.0
        while t < horizon:
            start = self.next_start(client, t)
            if start >= horizon:
                break
            end = self.window_end(client, start)
            assert end is not None
            total += min(end, horizon) - start
            t = end
        return total / horizon


def available_at(availability: Availability, clients: list[int], t: float) -> list[int]:
    """The clients of ``clients`` (sorted) that are available at ``t``, in the same order.
    Always-on availability returns ``clients`` itself, without a scan."""
    if isinstance(availability, AlwaysOn):
        return clients
    return [c for c in clients if availability.window_end(c, t) is not None]

"""A shared uplink: a total bandwidth split among the uploads in progress (processor sharing).

Each active transfer gets the share w_n / sum of active w (equal weights by default, or an
allocation from a solver); its rate is the link's rate at that share. Rates are recomputed
whenever a transfer starts, ends or is cancelled, and held in between (a fading block that
changes mid-transfer takes effect at the next change).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import simpy

from fedtempo.system.links import Link


@dataclass
class _Transfer:
    bits: float
    remaining: float
    start: float
    done: simpy.Event
    rate: float = 0.0


class SharedUplink:
    def __init__(
        self, env: simpy.Environment, link: Link, weights: Sequence[float] | None = None
    ) -> None:
        self.env = env
        self.link = link
        self.weights = weights
        self.active: dict[int, _Transfer] = {}
        self._last = env.now
        self._process = env.process(self._run())

    def transfer(self, client: int, bits: float) -> simpy.Event:
        """Start sending ``bits`` for ``client``; the event succeeds with the duration (s)."""
        self._advance()
        done = self.env.event()
        self.active[client] = _Transfer(float(bits), float(bits), self.env.now, done)
        self._process.interrupt("changed")
        return done

    def cancel(self, client: int) -> None:
        """Abandon ``client``'s transfer (client offline or dropped)."""
        self._advance()
        if self.active.pop(client, None) is not None:
            self._process.interrupt("changed")

    def _weight(self, client: int) -> float:
        return 1.0 if self.weights is None else float(self.weights[client])

    def _advance(self) -> None:
        dt = self.env.now - self._last
        for t in self.active.values():
            t.remaining -= t.rate * dt
        self._last = self.env.now

    def _rerate(self) -> None:
        total = sum(self._weight(c) for c in self.active)
        for c, t in self.active.items():
            t.rate = self.link.rate_bps(c, self.env.now, self._weight(c) / total)

    def _finish(self) -> None:
        for c in sorted(self.active):
            t = self.active[c]
            if t.remaining <= 1e-9 * t.bits + 1e-6:
                del self.active[c]
                t.done.succeed(self.env.now - t.start)

    def _run(self) -> Generator[Any, Any, None]:
        while True:
            self._rerate()
            try:
                if self.active:
                    wait = min(t.remaining / t.rate for t in self.active.values())
                    yield self.env.timeout(max(wait, 0.0))
                else:
                    yield self.env.event()  # idle until interrupted by a new transfer
            except simpy.Interrupt:
                pass
            self._advance()
            self._finish()

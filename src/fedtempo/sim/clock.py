"""Helpers on top of SimPy's clock. SimPy's environment is the only owner of virtual time.

Ordering of simultaneous events (documented rule): SimPy processes events by (time, priority,
scheduling order). Servers start client processes in increasing client id, so among events
scheduled at the same instant lower ids go first; an event scheduled earlier goes before one
scheduled later for the same time. Every result that could depend on this order is made
independent of it (a round's updates are reduced in client id order).

Events made with ``after_instant`` use a priority below every ordinary event, so they run after
everything else scheduled for the same instant: a round deadline at time T therefore accepts
an update that arrives at exactly T, and an evaluation at T sees every aggregation made at T.
"""

from __future__ import annotations

import simpy
from simpy.events import Event, EventPriority

LATE = EventPriority(2)  # simpy.events.URGENT = 0, NORMAL = 1


class AfterInstant(Event):
    """A timeout that fires after all URGENT/NORMAL events of its instant."""

    def __init__(self, env: simpy.Environment, delay: float) -> None:
        if delay < 0:
            raise ValueError(f"negative delay {delay}")
        super().__init__(env)
        self._ok = True
        self._value = None
        env.schedule(self, LATE, delay)


def after_instant(env: simpy.Environment, delay: float) -> AfterInstant:
    return AfterInstant(env, delay)

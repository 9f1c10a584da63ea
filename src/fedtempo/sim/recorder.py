"""The recorder: every simulator event and every evaluation, keyed by task.

Times are seconds of virtual time; ``wall_s`` is host seconds since the recorder started (a
measurement, the only field that differs between two runs with the same seed and config).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields

from fedtempo.aggregation.asynchronous import Outcome
from fedtempo.client.local import Update


@dataclass(frozen=True, slots=True)
class Event:
    """One simulator event.

    ``kind``: dispatch, download, compute, upload (client phases, at their end; ``duration`` is
    the phase's seconds, ``energy`` its joules), fail, offline, late (a session ended without an
    update), skip (a pruned round's allocation left the client out), round, aggregate (server;
    for aggregate ``duration`` holds the number of updates).
    """

    time: float
    wall_s: float
    kind: str
    task: int
    client: int  # -1 for server events
    version: int
    bytes: int = 0
    duration: float = 0.0
    energy: float = 0.0


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Global model of ``task`` at virtual ``time``: version, updates applied, test metrics."""

    time: float
    wall_s: float
    task: int
    version: int
    updates: int
    accuracy: float
    loss: float


@dataclass(frozen=True, slots=True)
class UpdateRecord:
    """One update as an asynchronous server processed it: staleness in versions and gamma,
    the weight it got (eta for AsyncFedED), the version it produced (-1: none yet, e.g.
    buffered), the client's next local epochs, and why it was rejected (empty if accepted)."""

    time: float
    task: int
    client: int
    base_version: int
    version: int
    staleness: int
    gamma: float
    weight: float
    epochs_next: int
    rejected: str


def columns(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


class Recorder:
    """Collects events and evaluations in memory; ``progress`` is called on every evaluation and
    aggregation with the current virtual time."""

    def __init__(self, progress: Callable[[float], None] | None = None) -> None:
        self.events: list[Event] = []
        self.evaluations: list[Evaluation] = []
        self.updates: list[UpdateRecord] = []
        self._progress = progress
        self._t0 = time.perf_counter()

    def wall(self) -> float:
        return time.perf_counter() - self._t0

    def event(
        self,
        now: float,
        kind: str,
        task: int,
        client: int,
        version: int,
        nbytes: int = 0,
        duration: float = 0.0,
        energy: float = 0.0,
    ) -> None:
        self.events.append(
            Event(now, self.wall(), kind, task, client, version, nbytes, duration, energy)
        )
        if kind == "aggregate" and self._progress is not None:
            self._progress(now)

    def evaluation(
        self, now: float, task: int, version: int, updates: int, accuracy: float, loss: float
    ) -> None:
        self.evaluations.append(
            Evaluation(now, self.wall(), task, version, updates, accuracy, loss)
        )
        if self._progress is not None:
            self._progress(now)

    def update(
        self, now: float, task: int, update: Update, outcome: Outcome, epochs_next: int
    ) -> None:
        st = outcome.staleness
        self.updates.append(
            UpdateRecord(
                now,
                task,
                update.client,
                update.base_version,
                -1 if outcome.version is None else outcome.version,
                -1 if st is None else st.versions,
                math.nan if st is None else st.distance,
                outcome.weight,
                epochs_next,
                outcome.reason,
            )
        )

"""The asynchronous server: up to C clients train at once; every arrival is aggregated at once.

Arrival order (documented rule): all uploads that complete at the same virtual instant are
gathered (after every other event of that instant) and processed in increasing client id. After
processing, idle clients are dispatched until C train again: randomly among idle, available
clients with data (the stream ("dispatch", task, n) for the n-th dispatch), or round-robin.
A client whose session failed or went offline becomes idle and restarts from the newest model.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Generator, Sequence
from typing import Any, Literal

import simpy

from fedtempo.aggregation.asynchronous import AsyncAggregator, AsyncState
from fedtempo.algorithms.asynchronous import AdaptiveEpochs, AsyncAlgorithm, AsyncRunState
from fedtempo.algorithms.jobs import TrainingJob
from fedtempo.client.local import Update
from fedtempo.sim.clock import after_instant
from fedtempo.sim.idle import IdleSet
from fedtempo.sim.task import SimTask
from fedtempo.sim.timeline import Runtime, session
from fedtempo.system.availability import AlwaysOn, available_at

__all__ = ["AdaptiveEpochs", "AsyncServer"]


class AsyncServer:
    def __init__(
        self,
        rt: Runtime,
        task: SimTask,
        *,
        rule: AsyncAggregator,
        concurrency: int,
        max_updates: int | None = None,
        dispatch: Literal["random", "round-robin"] = "random",
        epochs: AdaptiveEpochs | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.rt, self.task, self.rule = rt, task, rule
        self.concurrency = concurrency
        self.max_updates = max_updates
        self.dispatch_mode = dispatch
        self.algorithm = AsyncAlgorithm(rule, task.task, epochs)
        self.idle = IdleSet(task.trainer.clients_with_data(), task.trainer.num_clients)
        self.run_state: AsyncRunState = self.algorithm.init(
            task.model.params, self.idle, task.model.version
        )
        self.training: set[int] = set()
        self.arrivals: simpy.Store = simpy.Store(rt.env)
        self.received = 0
        self._dispatches = 0
        self._next_rr = 0
        self._waking = False

    @property
    def state(self) -> AsyncState:
        return self.run_state.rule

    @property
    def local_epochs(self) -> dict[int, int]:
        """Each client's next local epochs (AsyncFedED's K); empty when they are fixed."""
        return self.run_state.local_epochs

    # ---- dispatch ---------------------------------------------------------------------------

    def _candidates(self) -> Sequence[int]:
        """The idle, available clients, in increasing id (always-on: the idle set itself)."""
        availability = self.rt.devices.availability
        if isinstance(availability, AlwaysOn):
            return self.idle
        return available_at(availability, list(self.idle), self.rt.env.now)

    def _choose(self, candidates: Sequence[int]) -> int:
        if self.dispatch_mode == "round-robin":
            i = bisect.bisect_left(candidates, self._next_rr)  # candidates are sorted
            chosen = candidates[i] if i < len(candidates) else candidates[0]
            self._next_rr = chosen + 1
            return chosen
        rng = self.rt.streams.numpy("dispatch", self.task.task, self._dispatches)
        return int(candidates[int(rng.integers(len(candidates)))])

    def _fill(self) -> None:
        while len(self.training) < self.concurrency:
            candidates = self._candidates()
            if not candidates:
                self._wake_later()
                return
            self._start(self._choose(candidates))

    def _start(self, client: int) -> None:
        job = self.algorithm.start(self.run_state, client, self.task.next_dispatch(client))
        self.idle.remove(client)
        self.training.add(client)
        self._dispatches += 1
        self.rt.env.process(self._session(job))

    def _session(self, job: TrainingJob) -> Generator[Any, Any, None]:
        result = yield from session(self.rt, self.task, job)
        self.arrivals.put((job.client, job.base_version, result))

    def _wake_later(self) -> None:
        if self._waking or not self.idle:
            return
        avail, now = self.rt.devices.availability, self.rt.env.now
        soonest = min(avail.next_start(c, now) for c in self.idle)
        if math.isfinite(soonest):
            self._waking = True
            self.rt.env.process(self._wake(soonest - now))

    def _wake(self, delay: float) -> Generator[Any, Any, None]:
        yield self.rt.env.timeout(delay)
        self._waking = False
        self._fill()

    # ---- arrivals ---------------------------------------------------------------------------

    def _done(self) -> bool:
        return self.max_updates is not None and self.received >= self.max_updates

    def _consume(self, client: int, base_version: int, update: Update | None) -> None:
        self.training.discard(client)
        self.idle.add(client)
        if update is not None and not self._done():
            self.received += 1
            self._aggregate(update)
        self.algorithm.finish(self.run_state, base_version)

    def _aggregate(self, update: Update) -> None:
        env, task, rec = self.rt.env, self.task, self.rt.recorder
        outcome, k_next = self.algorithm.receive(self.run_state, update)
        rec.update(env.now, task.task, update, outcome, k_next)
        if outcome.accepted:
            task.model.updates_applied += 1
        if outcome.version is not None:
            task.model.params = self.state.params
            task.model.version = self.state.version
            rec.event(env.now, "aggregate", task.task, -1, task.model.version, 0, 1.0)

    def run(self) -> Generator[Any, Any, None]:
        self._fill()
        while not self._done():
            first = yield self.arrivals.get()
            yield after_instant(self.rt.env, 0.0)
            batch = [first, *self.arrivals.items]
            self.arrivals.items.clear()
            for client, base_version, update in sorted(batch, key=lambda b: (b[0], b[1])):
                self._consume(client, base_version, update)
            if not self._done():
                self._fill()

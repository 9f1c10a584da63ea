"""The synchronous round driver: any ``RoundAlgorithm`` on the virtual clock.

Each round: sample the cohort among the clients with data that are available at the round's
start (without replacement, from the round's own stream ("sample", task, round); if none is
available, wait for the first to become available); number each cohort client's session (its
dispatch); ask the algorithm for the round's plan given a ``RoundView`` at the round's start;
run every planned client's timeline (``sim.timeline``); wait for all of them or for the
deadline, interrupt stragglers (their training is never consumed), and hand the clients that
finished, in increasing id, to the algorithm's ``aggregate``.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any

import numpy as np
import simpy

from fedtempo.algorithms.protocol import ModelState, RoundAlgorithm, RoundOutcome
from fedtempo.sim.clock import after_instant
from fedtempo.sim.task import SimTask
from fedtempo.sim.timeline import Runtime, timeline
from fedtempo.system.availability import available_at


def sample_cohort(
    rt: Runtime, task: int, round_: int, candidates: list[int], size: int
) -> list[int]:
    """A round's cohort: min(size, |candidates|) distinct candidates from the round's own
    stream, sorted by id."""
    rng = rt.streams.numpy("sample", task, round_)
    size = min(size, len(candidates))
    return sorted(int(c) for c in rng.choice(np.asarray(candidates), size=size, replace=False))


def wait_for_someone(rt: Runtime, eligible: list[int]) -> Generator[Any, Any, list[int]]:
    """The eligible clients available now; if none is, wait until the first one becomes
    available ([] if none ever will)."""
    env, avail = rt.env, rt.devices.availability
    candidates = available_at(avail, eligible, env.now)
    while not candidates:
        soonest = min(avail.next_start(c, env.now) for c in eligible)
        if not np.isfinite(soonest):
            return []
        yield env.timeout(soonest - env.now)
        candidates = available_at(avail, eligible, env.now)
    return candidates


class SimView:
    """A ``RoundView`` at virtual time ``now``: the devices' expected times, with each cohort
    client's compute draw keyed like its session's ((task, dispatch))."""

    def __init__(self, rt: Runtime, task: SimTask, numbers: Mapping[int, int], now: float) -> None:
        self._rt, self._task, self._numbers, self._now = rt, task, numbers, now

    @property
    def now(self) -> float:
        return self._now

    def dispatch(self, client: int) -> int:
        """The client's dispatch number this round (the next one, outside the cohort)."""
        return self._numbers.get(client, self._task.dispatches.get(client, 0))

    def compute_time(self, client: int, flops: float) -> float:
        draw = (self._task.task, self.dispatch(client))
        return self._rt.devices.compute_time(client, flops, self._now, draw)

    def upload_time(self, client: int, bits: float) -> float:
        return self._rt.devices.upload_time(client, bits, self._now)

    def download_time(self, client: int, bits: float) -> float:
        return self._rt.devices.download_time(client, bits, self._now)


class RoundDriver:
    """Runs ``rounds`` rounds of ``algorithm`` for one task; ``state`` is the algorithm's state
    (the task's global model is kept equal to ``state.params`` after every round)."""

    def __init__(
        self,
        rt: Runtime,
        task: SimTask,
        algorithm: RoundAlgorithm[Any],
        *,
        rounds: int,
        clients_per_round: int,
        deadline: float | None = None,
    ) -> None:
        self.rt, self.task, self.algorithm = rt, task, algorithm
        self.rounds, self.clients_per_round, self.deadline = rounds, clients_per_round, deadline
        self.eligible = task.trainer.clients_with_data()
        self.state: ModelState = algorithm.init(task.model.params)

    def open_round(self, round_: int) -> Generator[Any, Any, list[int]]:
        """Wait for an available client, sample the round's cohort, record the round's start;
        [] if no client will ever be available."""
        candidates = yield from wait_for_someone(self.rt, self.eligible)
        if not candidates:
            return []
        task = self.task
        cohort = sample_cohort(self.rt, task.task, round_, candidates, self.clients_per_round)
        self.rt.recorder.event(
            self.rt.env.now, "round", task.task, -1, task.model.version, 0, float(len(cohort))
        )
        return cohort

    def run(self) -> Generator[Any, Any, None]:
        env, task, rec = self.rt.env, self.task, self.rt.recorder
        for round_ in range(self.rounds):
            cohort = yield from self.open_round(round_)
            if not cohort:
                return
            numbers = {c: task.next_dispatch(c) for c in cohort}
            view = SimView(self.rt, task, numbers, env.now)
            plan = self.algorithm.plan_round(self.state, cohort, view)
            for c in plan.skipped:
                rec.event(env.now, "skip", task.task, c, task.model.version)
            procs = [env.process(timeline(self.rt, cp)) for cp in plan.clients]
            everyone: simpy.Event = env.all_of(procs)
            if self.deadline is not None:
                everyone = everyone | after_instant(env, self.deadline)
            yield everyone
            results = tuple(p.value for p in procs if p.triggered and p.value is not None)
            for p in procs:
                if p.is_alive:
                    p.interrupt("deadline")
            self.state = self.algorithm.aggregate(self.state, RoundOutcome(plan, results))
            task.model.params = self.state.params
            task.model.version = self.state.version
            task.model.updates_applied += len(results)
            rec.event(
                env.now, "aggregate", task.task, -1, task.model.version, 0, float(len(results))
            )

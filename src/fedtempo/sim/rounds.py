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

from collections.abc import Generator, Mapping, Sequence
from typing import Any

import numpy as np
import simpy

from fedtempo.algorithms.protocol import (
    ClientResult,
    HasModels,
    RoundAlgorithm,
    RoundOutcome,
    RoundPlan,
)
from fedtempo.errors import ConfigError
from fedtempo.sim.clock import after_instant
from fedtempo.sim.task import SimTask
from fedtempo.sim.timeline import Runtime, compute_draw, timeline
from fedtempo.system.availability import Availability, available_at
from fedtempo.system.links import WirelessLink


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

    @property
    def availability(self) -> Availability:
        return self._rt.devices.availability

    def dispatch(self, client: int) -> int:
        """The client's dispatch number this round (the next one, outside the cohort)."""
        return self._numbers.get(client, self._task.dispatches.get(client, 0))

    def compute_time(self, client: int, flops: float) -> float:
        draw = compute_draw(self._task.task, self.dispatch(client))
        return self._rt.devices.compute_time(client, flops, self._now, draw)

    def upload_time(self, client: int, bits: float) -> float:
        return self._rt.devices.upload_time(client, bits, self._now)

    def download_time(self, client: int, bits: float) -> float:
        return self._rt.devices.download_time(client, bits, self._now)

    def uplink_snr_per_hz(self, client: int) -> float:
        link = getattr(self._rt.devices, "uplink", None)
        if not isinstance(link, WirelessLink):
            raise ConfigError(
                "devices.uplink.kind: this algorithm allocates wireless bandwidth and needs "
                f"'wireless', got a {type(link).__name__} uplink"
            )
        return link.snr_per_hz(client, self._now)


class RoundDriver:
    """Runs ``rounds`` rounds of ``algorithm`` over ``tasks``; ``state`` is the algorithm's
    state (every task's global model is kept equal to its model in ``state``).

    ``clients_per_round`` = None gives the algorithm every client with data as its cohort, at
    once, whoever is available (MA-FL's scheduler chooses itself); the view's dispatch numbers
    are then those of the first task.
    """

    def __init__(
        self,
        rt: Runtime,
        tasks: Sequence[SimTask],
        algorithm: RoundAlgorithm[Any],
        *,
        rounds: int,
        clients_per_round: int | None,
        deadline: float | None = None,
    ) -> None:
        self.rt, self.tasks, self.algorithm = rt, list(tasks), algorithm
        self.rounds, self.clients_per_round, self.deadline = rounds, clients_per_round, deadline
        self.eligible = sorted({c for t in self.tasks for c in t.trainer.clients_with_data()})
        self.state: HasModels = algorithm.init({t.task: t.model.params for t in self.tasks})
        self._carried: list[simpy.Process] = []

    @property
    def task(self) -> SimTask:
        return self.tasks[0]

    def open_round(self, round_: int) -> Generator[Any, Any, list[int]]:
        """Wait for an available client, sample the round's cohort, record the round's start;
        [] if no client will ever be available."""
        size, first = self.clients_per_round, self.task
        if size is None:
            cohort = list(self.eligible)
        else:
            candidates = yield from wait_for_someone(self.rt, self.eligible)
            if not candidates:
                return []
            cohort = sample_cohort(self.rt, first.task, round_, candidates, size)
        label = first.task if len(self.tasks) == 1 else -1
        self.rt.recorder.event(
            self.rt.env.now, "round", label, -1, first.model.version, 0, float(len(cohort))
        )
        return cohort

    def close(
        self, plan: RoundPlan, procs: list[simpy.Process]
    ) -> Generator[Any, Any, tuple[ClientResult, ...]]:
        """Wait for the round's end; the results it aggregates, in increasing client id."""
        env = self.rt.env
        if plan.close_at is not None:
            yield env.timeout(max(0.0, plan.close_at - env.now))
        else:
            everyone: simpy.Event = env.all_of(procs)
            if self.deadline is not None:
                everyone = everyone | after_instant(env, self.deadline)
            yield everyone
        pool = [*self._carried, *procs]
        cut = plan.close_at if plan.close_at is not None else float("inf")
        arrived = [p for p in pool if p.triggered and (p.value is None or p.value.time < cut)]
        if plan.carry_over:
            self._carried = [p for p in pool if p not in arrived]
        else:
            for p in pool:
                if p.is_alive:
                    p.interrupt("deadline")
        results = [p.value for p in arrived if p.value is not None]
        return tuple(sorted(results, key=lambda r: (r.update.client, r.update.task)))

    def run(self) -> Generator[Any, Any, None]:
        env, rec, first = self.rt.env, self.rt.recorder, self.task
        for round_ in range(self.rounds):
            cohort = yield from self.open_round(round_)
            if not cohort:
                return
            numbers = {c: first.next_dispatch(c) for c in cohort} if len(self.tasks) == 1 else {}
            view = SimView(self.rt, first, numbers, env.now)
            plan = self.algorithm.plan_round(self.state, cohort, view)
            for c in plan.skipped:
                rec.event(env.now, "skip", first.task, c, first.model.version)
            procs = [env.process(timeline(self.rt, cp)) for cp in plan.clients]
            results = yield from self.close(plan, procs)
            self.state = self.algorithm.aggregate(self.state, RoundOutcome(plan, results))
            self._publish(results)

    def _publish(self, results: tuple[ClientResult, ...]) -> None:
        """Every task's global model from the state; an aggregate event for each that moved."""
        env, rec = self.rt.env, self.rt.recorder
        for t in self.tasks:
            m = self.state.model(t.task)
            moved = m.version != t.model.version
            count = sum(1 for r in results if r.update.task == t.task)
            t.model.params, t.model.version = m.params, m.version
            t.model.updates_applied += count
            if moved:
                rec.event(env.now, "aggregate", t.task, -1, t.model.version, 0, float(count))

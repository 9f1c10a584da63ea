"""The synchronous server: FedAvg/FedProx rounds on the virtual clock.

Each round: sample k clients among those with data that are available at the round's start
(without replacement, from the round's own random stream; if none is available, wait for the
first to become available); each runs a session; the server waits for all of them or for the
deadline, interrupts stragglers (their training is never computed), and aggregates what arrived.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np

from fedtempo.aggregation.sync import SyncRule
from fedtempo.sim.clock import after_instant
from fedtempo.sim.executor import TrainingJob
from fedtempo.sim.session import Runtime, session
from fedtempo.sim.task import SimTask
from fedtempo.system.availability import available_at


class SyncServer:
    """FedAvg / FedProx rounds for one task."""

    def __init__(
        self,
        rt: Runtime,
        task: SimTask,
        *,
        rule: SyncRule,
        clients_per_round: int,
        rounds: int,
        deadline: float | None = None,
    ) -> None:
        self.rt, self.task = rt, task
        self.rule = rule
        self.clients_per_round = clients_per_round
        self.rounds = rounds
        self.deadline = deadline
        self.eligible = task.trainer.clients_with_data()

    def available(self, now: float) -> list[int]:
        return available_at(self.rt.devices.availability, self.eligible, now)

    def sample(self, round_: int, candidates: list[int]) -> list[int]:
        """The round's cohort: k distinct candidates, sorted by id."""
        rng = self.rt.streams.numpy("sample", self.task.task, round_)
        k = min(self.clients_per_round, len(candidates))
        return sorted(int(c) for c in rng.choice(np.asarray(candidates), size=k, replace=False))

    def _wait_for_someone(self) -> Generator[Any, Any, list[int]]:
        env, avail = self.rt.env, self.rt.devices.availability
        candidates = self.available(env.now)
        while not candidates:
            soonest = min(avail.next_start(c, env.now) for c in self.eligible)
            if not np.isfinite(soonest):
                return []
            yield env.timeout(soonest - env.now)
            candidates = self.available(env.now)
        return candidates

    def run(self) -> Generator[Any, Any, None]:
        env, task, rec = self.rt.env, self.task, self.rt.recorder
        for round_ in range(self.rounds):
            candidates = yield from self._wait_for_someone()
            if not candidates:
                return
            cohort = self.sample(round_, candidates)
            rec.event(env.now, "round", task.task, -1, task.model.version, 0, float(len(cohort)))
            procs = []
            for c in cohort:
                job = TrainingJob(
                    task.task, c, task.model.version, task.model.params, task.next_dispatch(c)
                )
                procs.append(env.process(session(self.rt, task, job)))
            everyone = env.all_of(procs)
            if self.deadline is not None:
                yield everyone | after_instant(env, self.deadline)
            else:
                yield everyone
            updates = [p.value for p in procs if p.triggered and p.value is not None]
            for p in procs:
                if p.is_alive:
                    p.interrupt("deadline")
            task.model.params = self.rule.aggregate(task.model.params, updates)
            task.model.version += 1
            task.model.updates_applied += len(updates)
            rec.event(
                env.now, "aggregate", task.task, -1, task.model.version, 0, float(len(updates))
            )

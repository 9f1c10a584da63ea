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
import torch

from fedtempo.aggregation.sync import SyncRule
from fedtempo.sim.clock import after_instant
from fedtempo.sim.executor import TrainingJob
from fedtempo.sim.session import Runtime, session
from fedtempo.sim.task import SimTask
from fedtempo.system.availability import available_at


def sample_cohort(rt: Runtime, task: int, round_: int, candidates: list[int], k: int) -> list[int]:
    """A round's cohort: min(k, |candidates|) distinct candidates from the round's own stream,
    sorted by id."""
    rng = rt.streams.numpy("sample", task, round_)
    k = min(k, len(candidates))
    return sorted(int(c) for c in rng.choice(np.asarray(candidates), size=k, replace=False))


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


def open_round(
    rt: Runtime, task: SimTask, eligible: list[int], round_: int, k: int
) -> Generator[Any, Any, list[int]]:
    """Wait for an available client, sample the round's cohort and record the round's start;
    [] if no client will ever be available."""
    candidates = yield from wait_for_someone(rt, eligible)
    if not candidates:
        return []
    cohort = sample_cohort(rt, task.task, round_, candidates, k)
    rt.recorder.event(rt.env.now, "round", task.task, -1, task.model.version, 0, float(len(cohort)))
    return cohort


def close_round(rt: Runtime, task: SimTask, params: torch.Tensor, updates: int) -> None:
    """Install the round's new global model and record the aggregation."""
    task.model.params = params
    task.model.version += 1
    task.model.updates_applied += updates
    rt.recorder.event(rt.env.now, "aggregate", task.task, -1, task.model.version, 0, float(updates))


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

    def run(self) -> Generator[Any, Any, None]:
        env, task = self.rt.env, self.task
        for round_ in range(self.rounds):
            k = self.clients_per_round
            cohort = yield from open_round(self.rt, task, self.eligible, round_, k)
            if not cohort:
                return
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
            params = self.rule.aggregate(task.model.params, updates)
            close_round(self.rt, task, params, len(updates))

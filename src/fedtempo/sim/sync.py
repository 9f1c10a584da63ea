"""The synchronous server: FedAvg/FedProx rounds on the virtual clock.

Each round: sample k clients with data (without replacement, from the round's own random stream),
each downloads the model, trains, uploads; the server waits for all of them or for the deadline,
drops stragglers (their training is never computed), and aggregates what arrived.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
import simpy

from fedtempo.aggregation.sync import SyncRule
from fedtempo.client.local import Update
from fedtempo.rng import Streams
from fedtempo.sim.clock import after_instant
from fedtempo.sim.executor import Executor, TrainingJob
from fedtempo.sim.recorder import Recorder
from fedtempo.sim.task import SimTask
from fedtempo.system.devices import DeviceModel


def client_session(
    env: simpy.Environment,
    task: SimTask,
    client: int,
    job: TrainingJob,
    devices: DeviceModel,
    executor: Executor,
    recorder: Recorder,
) -> Generator[Any, Any, Update | None]:
    """download -> train -> upload for one client; returns the update, or None if interrupted."""
    handle = executor.submit(job)
    bits = task.profile.size_bits
    version = job.base_version
    recorder.event(env.now, "dispatch", task.task, client, version)
    try:
        t = devices.download_time(client, bits, env.now)
        yield env.timeout(t)
        recorder.event(env.now, "download", task.task, client, version, bits // 8, t)
        t = devices.compute_time(client, task.compute_flops(client, job.epochs), env.now)
        yield env.timeout(t)
        recorder.event(env.now, "compute", task.task, client, version, 0, t)
        t = devices.upload_time(client, bits, env.now)
        yield env.timeout(t)
    except simpy.Interrupt:
        recorder.event(env.now, "late", task.task, client, version)
        return None
    update = handle.result()
    recorder.event(env.now, "upload", task.task, client, version, bits // 8, t)
    return update


class SyncServer:
    """FedAvg / FedProx rounds for one task."""

    def __init__(
        self,
        env: simpy.Environment,
        task: SimTask,
        devices: DeviceModel,
        executor: Executor,
        recorder: Recorder,
        streams: Streams,
        *,
        rule: SyncRule,
        clients_per_round: int,
        rounds: int,
        deadline: float | None = None,
    ) -> None:
        self.env, self.task, self.devices = env, task, devices
        self.executor, self.recorder, self.streams = executor, recorder, streams
        self.rule = rule
        self.clients_per_round = clients_per_round
        self.rounds = rounds
        self.deadline = deadline
        self.eligible = np.array(
            [c for c in range(len(task.trainer.client_indices)) if task.trainer.num_samples(c)]
        )

    def sample(self, round_: int) -> list[int]:
        """The round's cohort: k distinct clients with data, sorted by id."""
        rng = self.streams.numpy("sample", self.task.task, round_)
        k = min(self.clients_per_round, len(self.eligible))
        return sorted(int(c) for c in rng.choice(self.eligible, size=k, replace=False))

    def run(self) -> Generator[Any, Any, None]:
        env, task = self.env, self.task
        for round_ in range(self.rounds):
            cohort = self.sample(round_)
            self.recorder.event(env.now, "round", task.task, -1, task.model.version)
            procs = {}
            for c in cohort:
                job = TrainingJob(
                    task.task, c, task.model.version, task.model.params, task.next_dispatch(c)
                )
                procs[c] = env.process(
                    client_session(env, task, c, job, self.devices, self.executor, self.recorder)
                )
            everyone = env.all_of(list(procs.values()))
            if self.deadline is not None:
                yield everyone | after_instant(env, self.deadline)
            else:
                yield everyone
            updates = [p.value for p in procs.values() if p.triggered and p.value is not None]
            for p in procs.values():
                if p.is_alive:
                    p.interrupt("deadline")
            task.model.params = self.rule.aggregate(task.model.params, updates)
            task.model.version += 1
            task.model.updates_applied += len(updates)
            self.recorder.event(
                env.now, "aggregate", task.task, -1, task.model.version, 0, float(len(updates))
            )

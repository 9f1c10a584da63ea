"""Public test doubles: scripted device timings, tiny data and model, a recording rule.

Used by fedtempo's own tests and available to users testing their extensions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import simpy
import torch

from fedtempo.aggregation.sync import FedAvg, SyncRule
from fedtempo.algorithms.fedavg import FedAvgRounds
from fedtempo.client.local import LocalSpec, Update, evaluate
from fedtempo.client.trainer import ClientTrainer
from fedtempo.data.datasets import ArrayDataset
from fedtempo.models.profile import ModelProfile, build_model, profile_model
from fedtempo.params import flatten
from fedtempo.rng import Streams
from fedtempo.sim.executor import InlineExecutor
from fedtempo.sim.recorder import Recorder
from fedtempo.sim.rounds import RoundDriver
from fedtempo.sim.task import GlobalModel, SimTask
from fedtempo.sim.timeline import Runtime
from fedtempo.system.availability import AlwaysOn, Availability
from fedtempo.system.devices import DeviceModel
from fedtempo.system.links import Link


@dataclass(frozen=True)
class Timing:
    """Seconds a scripted client takes to download, compute and upload (any work size)."""

    download: float = 1.0
    compute: float = 1.0
    upload: float = 1.0


class ScriptedDevices:
    """A DeviceModel whose durations are fixed per client, independent of work size and time.

    Energy: ``compute_watts`` x compute seconds and ``upload_watts`` x upload seconds.
    ``uplink``: a real link whose channel state a bandwidth-allocating algorithm (pruned) reads;
    the durations stay scripted.
    """

    def __init__(
        self,
        timings: Mapping[int, Timing],
        default: Timing = Timing(),
        *,
        availability: Availability | None = None,
        failure_probability: float = 0.0,
        compute_watts: float = 2.0,
        upload_watts: float = 0.5,
        uplink: Link | None = None,
    ) -> None:
        self.timings = dict(timings)
        self.default = default
        self.availability: Availability = availability or AlwaysOn()
        self.failure_probability = failure_probability
        self.compute_watts = compute_watts
        self.upload_watts = upload_watts
        self.uplink = uplink  # the channel a bandwidth-allocating algorithm reads (its SNR)

    def compute_energy(self, client: int, flops: float) -> float:
        return self.compute_watts * self._t(client).compute

    def upload_energy(self, client: int, seconds: float) -> float:
        return self.upload_watts * seconds

    def _t(self, client: int) -> Timing:
        return self.timings.get(client, self.default)

    def compute_time(
        self, client: int, flops: float, now: float, draw: tuple[int, ...] = ()
    ) -> float:
        return self._t(client).compute

    def upload_time(self, client: int, bits: float, now: float) -> float:
        return self._t(client).upload

    def download_time(self, client: int, bits: float, now: float) -> float:
        return self._t(client).download


def tiny_dataset(
    num_samples: int = 240, num_features: int = 6, num_classes: int = 3, seed: int = 0
) -> ArrayDataset:
    """A small, learnable classification set: Gaussian blobs around per-class centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 2.0, (num_classes, num_features))
    y = rng.integers(0, num_classes, num_samples)
    x = centres[y] + rng.normal(0.0, 1.0, (num_samples, num_features))
    return ArrayDataset(
        torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64)), num_classes
    )


def tiny_task(
    num_clients: int = 4,
    spec: LocalSpec | None = None,
    seed: int = 0,
    model: str = "logreg",
    task: int = 0,
) -> SimTask:
    """A SimTask on ``tiny_dataset`` split evenly (round-robin) among ``num_clients``."""
    data = tiny_dataset(seed=seed)
    streams = Streams(seed)
    net = build_model(model, data.input_shape, data.num_classes, streams.torch("init", task))
    parts = [np.arange(c, len(data), num_clients) for c in range(num_clients)]
    trainer = ClientTrainer(
        task,
        net,
        data.x,
        data.y,
        parts,
        spec or LocalSpec(epochs=1, batch_size=16, lr=0.1),
        streams,
    )
    prof: ModelProfile = profile_model(model, net, data.input_shape)
    eval_net = build_model(model, data.input_shape, data.num_classes, streams.torch("init", task))
    return SimTask(
        task,
        f"tiny-{task}",
        trainer,
        prof,
        GlobalModel(flatten(net)),
        lambda p: evaluate(eval_net, p, data.x, data.y),
    )


@dataclass
class RecordingFedAvg:
    """FedAvg that remembers every batch of updates it aggregated (in the order given)."""

    inner: FedAvg = field(default_factory=FedAvg)
    calls: list[list[Update]] = field(default_factory=list)

    def aggregate(self, current: torch.Tensor, updates: Sequence[Update]) -> torch.Tensor:
        self.calls.append(list(updates))
        return self.inner.aggregate(current, updates)


def runtime(
    task: SimTask, devices: DeviceModel, seed: int = 0, env: simpy.Environment | None = None
) -> Runtime:
    """A Runtime for one task with an inline executor and a fresh recorder."""
    return Runtime(
        env or simpy.Environment(),
        devices,
        InlineExecutor({task.task: task.trainer}),
        Recorder(),
        Streams(seed),
    )


def fedavg_driver(
    rt: Runtime,
    task: SimTask,
    *,
    rule: SyncRule,
    clients_per_round: int,
    rounds: int,
    deadline: float | None = None,
) -> RoundDriver:
    """FedAvg rounds of ``task`` reduced by ``rule`` (e.g. a ``RecordingFedAvg``)."""
    algorithm = FedAvgRounds(rule, task.workload())
    return RoundDriver(
        rt, [task], algorithm, rounds=rounds, clients_per_round=clients_per_round, deadline=deadline
    )

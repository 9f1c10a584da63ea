"""What the simulator knows about one task (one model being trained)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from fedtempo.algorithms.protocol import Workload
from fedtempo.client.trainer import ClientTrainer
from fedtempo.models.profile import ModelProfile


@dataclass
class GlobalModel:
    """The server's current model of one task: its vector, version and updates applied so far."""

    params: torch.Tensor
    version: int = 0
    updates_applied: int = 0


@dataclass
class SimTask:
    """A task in a simulation: its trainer, its profile (FLOPs, bytes), its global model and how
    to evaluate a parameter vector (returns accuracy, loss)."""

    task: int
    name: str
    trainer: ClientTrainer
    profile: ModelProfile
    model: GlobalModel
    evaluate: Callable[[torch.Tensor], tuple[float, float]]
    dispatches: dict[int, int] = field(default_factory=dict)

    def next_dispatch(self, client: int) -> int:
        """Number the client's trainings of this task: 0, 1, 2 ..."""
        n = self.dispatches.get(client, 0)
        self.dispatches[client] = n + 1
        return n

    def workload(self) -> Workload:
        """What the task asks of its clients, for an algorithm."""
        n = [self.trainer.num_samples(c) for c in range(self.trainer.num_clients)]
        return Workload(self.task, self.profile, self.trainer.spec, n)

    def compute_flops(self, client: int, epochs: int | None = None) -> float:
        """FLOPs of one local training of ``client``: train FLOPs/sample x samples processed."""
        processed = self.trainer.spec.samples_processed(self.trainer.num_samples(client), epochs)
        return float(self.profile.train_flops) * processed

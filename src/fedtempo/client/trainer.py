"""A task's client-side trainer: one model workspace and where each client's samples are."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedtempo.client.batched import train_batched
from fedtempo.client.local import LocalSpec, Update, train_local
from fedtempo.data.clients import ClientData, IndexedClients
from fedtempo.rng import Streams


@dataclass(frozen=True)
class PersonalSetup:
    """A task whose devices keep a personal part: ``mask`` marks its entries of the flat vector;
    ``spec`` is the personal phase's local procedure (the global phase uses the trainer's)."""

    mask: torch.Tensor
    spec: LocalSpec


class ClientTrainer:
    """Trains any client of one task from a given start vector.

    One model object is reused as a workspace for every client (no per-client model copies); the
    result depends only on (seed, task, client, base version, dispatch number), never on which
    clients trained before. ``personal`` (pruned, personalized tasks) and ``blocks`` (the model
    as named blocks sharing its modules, for split training) are set by the build when the
    task's algorithm needs them.
    """

    personal: PersonalSetup | None = None
    blocks: nn.Sequential | None = None

    def __init__(
        self,
        task: int,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        client_indices: Sequence[np.ndarray],
        spec: LocalSpec,
        streams: Streams,
    ) -> None:
        self.task = task
        self.model = model
        self.source: ClientData = IndexedClients(x, y, client_indices)
        self.spec = spec
        self.streams = streams

    @classmethod
    def over(
        cls, task: int, model: nn.Module, source: ClientData, spec: LocalSpec, streams: Streams
    ) -> ClientTrainer:
        """A trainer whose clients' samples come from ``source`` (generated per client, say)."""
        trainer = cls.__new__(cls)
        trainer.task, trainer.model, trainer.source = task, model, source
        trainer.spec, trainer.streams = spec, streams
        return trainer

    @property
    def indexed(self) -> IndexedClients:
        """The in-memory data set and its index views, for what needs the whole set at once."""
        if not isinstance(self.source, IndexedClients):
            raise TypeError(
                f"task {self.task}: this needs the data set in memory, but its clients' data "
                f"is a {type(self.source).__name__} (generated per client)"
            )
        return self.source

    @property
    def num_clients(self) -> int:
        return len(self.source)

    def num_samples(self, client: int) -> int:
        return self.source.num_samples(client)

    def clients_with_data(self) -> list[int]:
        """Ids of the clients holding at least one training sample, increasing."""
        return [c for c in range(len(self.source)) if self.source.num_samples(c)]

    def num_steps(self, client: int, epochs: int | None = None) -> int:
        return self.spec.num_steps(self.num_samples(client), epochs)

    def data(self, client: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.source.data(client)

    def generator(self, client: int, base_version: int, dispatch: int) -> torch.Generator:
        return self.streams.torch("train", self.task, client, base_version, dispatch)

    def train_many(
        self, jobs: Sequence[tuple[int, int, torch.Tensor, int, int | None]]
    ) -> list[Update]:
        """Several trainings (client, base version, start, dispatch, epochs) as one vectorised
        computation; equal to ``train`` for each, up to float rounding."""
        data = [self.data(c) for c, _, _, _, _ in jobs]
        gens = [self.generator(c, v, d) for c, v, _, d, _ in jobs]
        starts = torch.stack([s for _, _, s, _, _ in jobs])
        out = train_batched(self.model, starts, data, self.spec, gens, [e for *_, e in jobs])
        return [self._update(c, v, *r) for (c, v, _, _, _), r in zip(jobs, out, strict=True)]

    def _update(
        self, client: int, base_version: int, delta: torch.Tensor, steps: int, loss: float
    ) -> Update:
        return Update(
            client=client,
            task=self.task,
            base_version=base_version,
            delta=delta,
            num_samples=self.num_samples(client),
            num_steps=steps,
            loss=loss,
        )

    def train(
        self,
        client: int,
        base_version: int,
        start: torch.Tensor,
        dispatch: int = 0,
        epochs: int | None = None,
    ) -> Update:
        """Run the local procedure for ``client`` from ``start``; ``dispatch`` numbers the
        client's trainings (so retraining from the same version draws fresh batches)."""
        x, y = self.data(client)
        gen = self.generator(client, base_version, dispatch)
        delta, steps, loss = train_local(self.model, start, x, y, self.spec, gen, epochs)
        return self._update(client, base_version, delta, steps, loss)

"""Asynchronous training as a clock-free algorithm: hand out work, fold in each update.

Both drivers run this object: the simulator's ``AsyncServer`` (virtual clock, dispatch among
idle devices) and the network service (wall clock, parties that ask for work). The rule
(``AsyncAggregator``: staleness weight x server step) decides how an update changes the model;
``AdaptiveEpochs`` is AsyncFedED's local-epoch rule. The driver decides *who* trains *when*.

Life of one training: ``start`` references the current version and returns the job;
``receive`` applies the update (or rejects it, with its reason) and returns the client's next
local epochs; ``finish`` drops the reference, after the update was received or lost.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from fedtempo.aggregation.asynchronous import (
    AsyncAggregator,
    AsyncState,
    Outcome,
    adapt_epochs,
    async_rule_from,
)
from fedtempo.algorithms.jobs import TrainingJob
from fedtempo.client.local import Update


@dataclass(frozen=True)
class AdaptiveEpochs:
    """AsyncFedED's local-epoch rule (kappa = 0 keeps K fixed at k_init)."""

    kappa: float = 1.0
    gamma_bar: float = 2.0
    k_init: int = 5
    k_max: int = 20


@dataclass
class AsyncRunState:
    """The rule's state (versions, buffer, rejection counts) and each client's next K."""

    rule: AsyncState
    local_epochs: dict[int, int] = field(default_factory=dict)
    applied: int = 0

    @property
    def params(self) -> torch.Tensor:
        return self.rule.params

    @property
    def version(self) -> int:
        return self.rule.version


@dataclass(frozen=True)
class AsyncAlgorithm:
    """An asynchronous rule for task ``task``; ``epochs`` set: AsyncFedED's adaptive K."""

    rule: AsyncAggregator
    task: int = 0
    epochs: AdaptiveEpochs | None = None

    def init(
        self, params: torch.Tensor, clients: Iterable[int] = (), version: int = 0
    ) -> AsyncRunState:
        """The state before any update; with adaptive epochs every client starts at k_init."""
        k = {c: self.epochs.k_init for c in clients} if self.epochs else {}
        return AsyncRunState(self.rule.init(params, version), k)

    def next_epochs(self, state: AsyncRunState, client: int) -> int | None:
        """The local epochs ``client`` trains next (None: the task's own)."""
        k = self.epochs_for(state.local_epochs.get(client))
        if k is not None:
            state.local_epochs[client] = k
        return k

    def epochs_for(self, stored: int | None) -> int | None:
        """The local epochs of a client whose K is ``stored`` (None: not set yet, k_init);
        None where epochs are the task's own."""
        if self.epochs is None:
            return None
        return self.epochs.k_init if stored is None else stored

    def describe(self) -> dict[str, Any]:
        """The algorithm as JSON data (``async_algorithm_from`` reads it back)."""
        epochs = None if self.epochs is None else asdict(self.epochs)
        return {"rule": self.rule.describe(), "task": self.task, "epochs": epochs}

    def start(self, state: AsyncRunState, client: int, dispatch: int) -> TrainingJob:
        """``client`` starts training from the current version (referenced until ``finish``)."""
        version, params = state.rule.store.acquire()
        return TrainingJob(
            self.task, client, version, params, dispatch, self.next_epochs(state, client)
        )

    def receive(self, state: AsyncRunState, update: Update) -> tuple[Outcome, int]:
        """Apply (or reject) ``update``; returns its outcome and the client's next local
        epochs (0 when they are fixed). The base version stays referenced until ``finish``."""
        _, outcome = self.rule.on_update(state.rule, update)
        k_next = state.local_epochs.get(update.client, 0)
        if outcome.accepted:
            state.applied += 1
            if self.epochs is not None and outcome.staleness is not None:
                e = self.epochs
                gamma = outcome.staleness.distance
                k_next = adapt_epochs(k_next, gamma, e.kappa, e.gamma_bar, e.k_max)
                state.local_epochs[update.client] = k_next
        return outcome, k_next

    def finish(self, state: AsyncRunState, base_version: int) -> None:
        """A training from ``base_version`` is over (received or lost): drop its reference."""
        state.rule.store.release(base_version)


def async_algorithm_from(data: Any) -> AsyncAlgorithm:
    """The algorithm ``AsyncAlgorithm.describe`` wrote."""
    try:
        epochs = None if data["epochs"] is None else AdaptiveEpochs(**data["epochs"])
        return AsyncAlgorithm(async_rule_from(data["rule"]), int(data["task"]), epochs)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not an asynchronous algorithm description: {data!r} ({exc})") from None

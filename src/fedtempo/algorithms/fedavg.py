"""FedAvg and FedProx as a round algorithm (McMahan et al. 2017; Li et al. 2020).

Every cohort client downloads the global model, trains the task's local procedure (FedProx: with
the proximal term of its ``LocalSpec``) and uploads its delta; the round's updates are reduced by
a ``SyncRule`` (``FedAvg(server_lr)``: x <- x + server_lr sum_i (n_i / n) Delta_i).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from fedtempo.aggregation.sync import SyncRule
from fedtempo.algorithms.jobs import TrainingJob
from fedtempo.algorithms.protocol import (
    ClientPlan,
    ModelState,
    RoundOutcome,
    RoundPlan,
    RoundView,
    Workload,
    standard_phases,
)


@dataclass(frozen=True)
class FedAvgRounds:
    """Synchronous rounds reduced by ``rule``; the state is a plain ``ModelState``."""

    rule: SyncRule
    workload: Workload

    def init(self, params: Mapping[int, torch.Tensor]) -> ModelState:
        return ModelState(params[self.workload.task])

    def plan_round(self, state: ModelState, cohort: Sequence[int], view: RoundView) -> RoundPlan:
        w, bits = self.workload, float(self.workload.profile.size_bits)
        plans = tuple(
            ClientPlan(
                TrainingJob(w.task, c, state.version, state.params, view.dispatch(c)),
                standard_phases(bits, w.flops(c)),
            )
            for c in cohort
        )
        return RoundPlan(plans)

    def aggregate(self, state: ModelState, outcome: RoundOutcome) -> ModelState:
        updates = [r.update for r in outcome.results]
        state.params = self.rule.aggregate(state.params, updates)
        state.version += 1
        return state

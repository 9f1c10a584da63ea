"""Partial-model pruning and personalization as a round algorithm (SPEC E; Liu et al. 2023).

Each round the cohort sees that round's wireless channel; the allocation policy (the KKT
solution, or a fixed ratio with equal shares) picks every device's pruning ratio rho and
bandwidth share; devices it cannot serve skip the round. A served device trains (personal phase,
then the masked global phase), computes for T_v + (1 - rho) T_u seconds and uploads its kept
values and mask (their real size) at the Shannon rate of its share. When the round closes, each
global coordinate is averaged over the devices that kept it, and the devices' new personal parts
(which never leave them) take effect. The devices' timeline has no download phase: the latency
model of SPEC E charges computation and the upload only.

Costs: the global phase costs the model's train FLOPs per sample; the personal phase a forward
pass plus the backward share of the personal parameters (frozen global layers need no backward).

The latency threshold, unless given: ``threshold_factor`` x the slowest unpruned latency among
*all* devices with data on the first round's channel, each with an equal share of the bandwidth
(B / the cohort size). It depends on the first round's time, not on which devices it sampled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from fedtempo.algorithms.jobs import TrainingJob
from fedtempo.algorithms.protocol import (
    ClientPlan,
    Compute,
    ModelState,
    RoundOutcome,
    RoundPlan,
    RoundView,
    Upload,
    Workload,
)
from fedtempo.alloc.pruning import PruningAllocation, PruningProblem
from fedtempo.client.local import LocalSpec, evaluate
from fedtempo.personalize.masks import MaskedUpload, kept_count, masked_average, upload_bytes

# A policy maps a round's problem to (allocation over its devices, indices left out).
Policy = Callable[[PruningProblem], tuple[PruningAllocation, list[int]]]


@dataclass(frozen=True)
class RoundLog:
    """One round as planned (latencies from the real upload size; nan for left-out devices)."""

    round: int
    time: float
    clients: list[int]
    problem: PruningProblem
    allocation: PruningAllocation
    left_out: list[int]  # client ids that skipped the round
    latency: np.ndarray  # planned seconds per client of ``clients``


@dataclass(kw_only=True)
class PrunedState(ModelState):
    """The global model plus the devices' personal parts: ``personal`` marks the personal
    entries of the flat vector; ``parts[c]`` is device c's once it has trained (``initial``
    before). ``threshold``: the latency threshold in seconds, fixed on the first round."""

    personal: torch.Tensor
    initial: torch.Tensor
    parts: dict[int, torch.Tensor] = field(default_factory=dict)
    threshold: float | None = None

    def model_of(self, client: int, global_params: torch.Tensor | None = None) -> torch.Tensor:
        """Device ``client``'s full model: the global part with its own personal part."""
        vec = (self.params if global_params is None else global_params).clone()
        vec[self.personal] = self.parts.get(client, self.initial)
        return vec


@dataclass(frozen=True)
class PrunedRounds:
    """Pruned, personalized rounds for one task (see the module docstring)."""

    workload: Workload
    personal: torch.Tensor  # mask over the flat vector
    personal_spec: LocalSpec
    policy: Policy
    bandwidth_hz: float
    rho_max: float
    clients_per_round: int
    threshold_s: float | None = None
    threshold_factor: float = 0.5

    @property
    def global_numel(self) -> int:
        return int((~self.personal).sum())

    def init(self, params: Mapping[int, torch.Tensor]) -> PrunedState:
        start = params[self.workload.task]
        return PrunedState(start, personal=self.personal, initial=start[self.personal].clone())

    # ---- costs -----------------------------------------------------------------------------

    def global_flops(self, client: int) -> float:
        return self.workload.flops(client)

    def personal_flops(self, client: int) -> float:
        if not bool(self.personal.any()):
            return 0.0
        prof = self.workload.profile
        frac = 1.0 - self.global_numel / len(self.personal)  # personal share of the parameters
        per_sample = prof.forward_flops + frac * (prof.train_flops - prof.forward_flops)
        return per_sample * self.personal_spec.samples_processed(self.workload.samples[client])

    def problem(self, clients: Sequence[int], view: RoundView, threshold: float) -> PruningProblem:
        """The round's instance: compute times, channel (p g / N0 per device), sizes."""
        t_global = [view.compute_time(c, self.global_flops(c)) for c in clients]
        t_personal = [view.compute_time(c, self.personal_flops(c)) for c in clients]
        snr = np.array([view.uplink_snr_per_hz(c) for c in clients])
        sizes = np.array([self.workload.samples[c] for c in clients], dtype=np.float64)
        return PruningProblem(
            weights=sizes / sizes.sum(),
            t_global=np.asarray(t_global, dtype=np.float64),
            t_personal=np.asarray(t_personal, dtype=np.float64),
            model_bits=32.0 * self.global_numel,
            threshold=threshold,
            bandwidth=self.bandwidth_hz,
            rho_max=self.rho_max,
            rate="shannon",
            snr_per_hz=snr,
        )

    def first_threshold(self, view: RoundView) -> float:
        """``threshold_factor`` x the slowest unpruned latency of every device with data on
        this round's channel, with B / the cohort size each (the first round's rule)."""
        everyone = [c for c, n in enumerate(self.workload.samples) if n > 0]
        p = self.problem(everyone, view, np.inf)
        share = self.bandwidth_hz / min(self.clients_per_round, len(everyone))
        return self.threshold_factor * max(p.latency(i, 0.0, share) for i in range(len(everyone)))

    # ---- the protocol ----------------------------------------------------------------------

    def plan_round(self, state: PrunedState, cohort: Sequence[int], view: RoundView) -> RoundPlan:
        threshold = state.threshold or self.threshold_s or self.first_threshold(view)
        p = self.problem(cohort, view, threshold)
        alloc, out = self.policy(p)
        plans, latency = [], np.full(len(cohort), np.nan)
        for i, c in enumerate(cohort):
            if i in out:
                continue
            rho, b = float(alloc.rho[i]), float(alloc.bandwidth[i])
            job = TrainingJob(
                self.workload.task,
                c,
                state.version,
                state.model_of(c),
                view.dispatch(c),
                prune_ratio=rho,
            )
            nbytes = upload_bytes(self.global_numel, kept_count(self.global_numel, rho))
            rate = p.rate_of(i, b)
            compute_s = float(p.t_personal[i] + (1.0 - rho) * p.t_global[i])
            latency[i] = compute_s + 8.0 * nbytes / rate
            flops = self.personal_flops(c) + (1.0 - rho) * self.global_flops(c)
            plans.append(ClientPlan(job, (Compute(flops), Upload(8.0 * nbytes, rate))))
        left = [cohort[i] for i in out]
        log = RoundLog(len(state.log), view.now, list(cohort), p, alloc, left, latency)
        return RoundPlan(tuple(plans), tuple(left), log)

    def aggregate(self, state: PrunedState, outcome: RoundOutcome) -> PrunedState:
        glob = ~self.personal
        uploads, parts = [], {}
        for r in outcome.results:
            u = r.update
            keep = u.keep if u.keep is not None else glob
            values = state.params[glob] + u.delta[glob]
            uploads.append(MaskedUpload(values, keep[glob], float(u.num_samples)))
            old = state.parts.get(u.client, state.initial)
            parts[u.client] = old + u.delta[self.personal]
        params = state.params.clone()
        params[glob] = masked_average(params[glob], uploads)
        state.params = params
        state.parts.update(parts)  # the new personal parts take effect with the new model
        state.version += 1
        state.threshold = outcome.plan.info.problem.threshold
        state.log.append(outcome.plan.info)
        return state


def personalized_evaluator(
    current: Callable[[], PrunedState],
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    tests: Sequence[np.ndarray],
) -> Callable[[torch.Tensor], tuple[float, float]]:
    """Evaluates every device's own model (``current()``'s personal parts on ``params``) on its
    own test split (indices into x, y); returns the test-sample-weighted accuracy and loss."""
    clients = [c for c, idx in enumerate(tests) if len(idx)]
    if not clients:
        raise ValueError("personalized evaluation needs per-device test splits (none is set)")

    def run(params: torch.Tensor) -> tuple[float, float]:
        state = current()
        acc = loss = 0.0
        total = 0
        for c in clients:
            idx = torch.from_numpy(np.asarray(tests[c], dtype=np.int64))
            a, l_ = evaluate(model, state.model_of(c, params), x[idx], y[idx])
            acc, loss, total = acc + a * len(idx), loss + l_ * len(idx), total + len(idx)
        return acc / total, loss / total

    return run

"""SplitFed as a round algorithm (SPEC D): per-round cuts and server shares, FedAvg of the parts.

Each round the planner reads the round's problem (each cohort device's compute speed and link
rates at the round's start, its iterations and batch) and picks cuts and server shares. A device
with cut l < L has the timeline

    download the client part (M(l) bits)
    K times: compute b samples through blocks 1..l (forward + backward), upload b S(l) bits of
             activations, the server works b Phi_s(l) / (phi_n F) seconds, download b S(l) bits
    upload the client part

and with l = L (plain FL) the K iterations are one computation. When the round closes, client
and server parts are averaged layer-wise: FedAvg of the whole vectors, sample-weighted (split
training computes exactly FedAvg's local update). Rates are read at each transfer, so a device's
measured latency differs from the plan's (rates at the round's start) when links vary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedtempo.aggregation.sync import FedAvg
from fedtempo.algorithms.jobs import TrainingJob
from fedtempo.algorithms.protocol import (
    ClientPlan,
    Compute,
    Download,
    Exchange,
    ModelState,
    Phase,
    RoundOutcome,
    RoundPlan,
    RoundView,
    Upload,
    Workload,
)
from fedtempo.alloc.sfl import SflAllocation, SflProblem
from fedtempo.split.profile import CutProfile

Planner = Callable[[SflProblem], SflAllocation]


@dataclass(frozen=True)
class SplitRoundLog:
    """One round: the problem, the plan, and each device's measured latency (seconds)."""

    round: int
    time: float
    clients: list[int]
    problem: SflProblem
    plan: SflAllocation
    measured: np.ndarray


@dataclass(frozen=True)
class SplitFedRounds:
    """Synchronous SplitFed rounds for one task whose model is splittable."""

    workload: Workload
    profile: CutProfile
    planner: Planner
    server_flops: float

    def __post_init__(self) -> None:
        if not self.server_flops > 0:
            raise ValueError(f"server compute must be > 0 FLOP/s, got {self.server_flops}")

    def init(self, params: Mapping[int, torch.Tensor]) -> ModelState:
        return ModelState(params[self.workload.task])

    def problem(self, cohort: Sequence[int], view: RoundView) -> SflProblem:
        """The round's instance: speeds and rates at the round's start; K b = samples
        processed."""
        prof, w = self.profile, self.workload
        ref_flops, ref_bits = prof.total_flops, float(prof.client_bits[-1])
        speed = [ref_flops / view.compute_time(c, ref_flops) for c in cohort]
        up = [ref_bits / view.upload_time(c, ref_bits) for c in cohort]
        down = [ref_bits / view.download_time(c, ref_bits) for c in cohort]
        steps = np.array([w.steps(c) for c in cohort], dtype=np.float64)
        samples = np.array([w.samples_processed(c) for c in cohort], dtype=np.float64)
        return SflProblem(
            client_flops=prof.client_flops,
            server_flops=prof.server_flops,
            smashed_bits=prof.smashed_bits,
            client_bits=prof.client_bits,
            speed=np.asarray(speed),
            up=np.asarray(up),
            down=np.asarray(down),
            iterations=steps,
            batch=samples / steps,
            server_speed=self.server_flops,
        )

    def phases(self, cut: int, share: float, steps: int, batch: float) -> tuple[Phase, ...]:
        prof, i = self.profile, cut - 1
        part_bits = float(prof.client_bits[i])
        flops = batch * float(prof.client_flops[i])
        if cut == len(prof.names):  # plain FL: one computation, nothing crosses per batch
            work: Phase = Compute(flops * steps)
        else:
            bits = batch * float(prof.smashed_bits[i])
            server_s = batch * float(prof.server_flops[i]) / (share * self.server_flops)
            work = Exchange(flops, bits, server_s, bits, steps)
        return (Download(part_bits), work, Upload(part_bits))

    def plan_round(self, state: ModelState, cohort: Sequence[int], view: RoundView) -> RoundPlan:
        p = self.problem(cohort, view)
        plan = self.planner(p)
        stuck = np.flatnonzero(~np.isfinite(plan.latency))
        if len(stuck):  # a split device with no server share would never finish
            c = cohort[int(stuck[0])]
            raise ValueError(
                f"SFL plan ({plan.policy}) leaves client {c} without a finite "
                f"latency (cut {int(plan.cuts[stuck[0]])}, share 0)"
            )
        clients = []
        for i, c in enumerate(cohort):
            cut = int(plan.cuts[i])
            job = TrainingJob(
                self.workload.task, c, state.version, state.params, view.dispatch(c), cut=cut
            )
            phases = self.phases(cut, float(plan.shares[i]), int(p.iterations[i]), p.batch[i])
            clients.append(ClientPlan(job, phases))
        return RoundPlan(tuple(clients), info=(view.now, list(cohort), p, plan))

    def aggregate(self, state: ModelState, outcome: RoundOutcome) -> ModelState:
        start, cohort, problem, plan = outcome.plan.info
        measured = {r.update.client: r.duration for r in outcome.results}
        durations = np.array([measured.get(c, np.nan) for c in cohort])
        state.params = FedAvg().aggregate(state.params, [r.update for r in outcome.results])
        state.version += 1
        state.log.append(SplitRoundLog(len(state.log), start, cohort, problem, plan, durations))
        return state

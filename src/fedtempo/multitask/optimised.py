"""The MA-FL optimiser as a scheduler: PlanContext -> MaflProblem -> SCA plan -> Schedule."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np

from fedtempo.alloc.mafl import Candidates, MaflProblem, Plan, plan
from fedtempo.alloc.pruning import Infeasible
from fedtempo.multitask.calibration import Calibration
from fedtempo.multitask.schedule import Schedule
from fedtempo.multitask.schedulers import PlanContext, round_robin

Mode = Literal["joint", "schedule", "sizing"]


@dataclass(frozen=True)
class Physics:
    """What the optimiser knows of the devices and models (planning values: mean link rates).

    ``samples`` (N x M) training samples per device and model; ``train_flops`` (M) FLOPs per
    training sample; ``speed`` (N) FLOP/s; ``upload_j`` and ``comm_s`` (N x M) energy of an
    upload and seconds of download + upload; ``round_s`` the round length.
    """

    samples: np.ndarray
    train_flops: np.ndarray
    speed: np.ndarray
    kappa: float
    upload_j: np.ndarray
    comm_s: np.ndarray
    round_s: float


@dataclass(frozen=True)
class PlanRecord:
    """One horizon's solve: the objective's history, the sessions planned, the solve time
    (host seconds, a measurement) and each model's G and k as the plan used them."""

    first_round: int
    relaxed: list[float]
    rounded: float
    sizing: list[float]
    objective: float
    sessions: int
    solve_s: float
    gaps: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    floor: int = 0  # the sessions per model the plan had to give every model


@dataclass
class SCAScheduler:
    """Minimises sum_m phi_m Psi_m + beta_E E_total over each horizon (``fedtempo.alloc.mafl``),
    with the constants of every model's Psi_m taken from the context. ``mode``: "joint" (the
    optimiser), or one half of it alone (SPEC B's ablations): "schedule" (the optimiser's
    sessions at the nominal gamma and B) or "sizing" (round-robin's sessions, gamma and B
    chosen by the optimiser). ``participation``: weight of the participation term.
    ``calibration``: G and k from each model's learning curve along the run
    (``fedtempo.multitask.calibration``); None: the probe's G and k at each plan.
    ``drift_horizon_min``: each model's drift horizon gamma0 is planned with at least this
    many local steps (the probe round's fit alone puts it at 1 step at most plans, while
    round-robin gains 7 points from 5 to 40 iterations in W-mafl; see the MA-FL issue's notes).
    ``model_share``: every model gets at least floor(model_share x the horizon's free upload
    slots / M) sessions (or ``min_sessions``, if more); where no schedule meets that floor, it is
    lowered by a quarter at a time until one does (``min_sessions`` itself is never lowered).
    ``work_visits``: the participation term counts each session, planned or recent, by
    ``visit_work`` of its samples (a session sized down to 8 samples is not a visit).
    ``spare``: (device, model) pairs never scheduled (``fedtempo.multitask.schedulers.
    costly_devices``): the round-robin schedule of "sizing" skips them, and the other modes plan
    as if those devices held no data of those models (None: every pair with data).
    ``balance``: weight of the visit-balance term (``fedtempo.alloc.mafl.balance``; 0: off).
    ``min_iterations``: the least gamma a sized session gets (where its latency allows)."""

    physics: Physics
    beta_e: float
    max_iterations: int = 100
    min_iterations: int = 1
    batch_range: tuple[int, int] = (8, 128)
    energy_budget: float | None = None
    min_sessions: int = 0
    mode: Mode = "joint"
    participation: float = 1.0
    calibration: Calibration | None = field(default_factory=Calibration)
    drift_horizon_min: float = 0.0
    model_share: float = 0.0
    work_visits: bool = False
    spare: np.ndarray | None = None
    balance: float = 0.0
    log: list[PlanRecord] = field(default_factory=list)
    needs_terms: ClassVar[bool] = True  # the server measures the surrogate's constants for it

    def problem(self, ctx: PlanContext, min_sessions: int | None = None) -> MaflProblem:
        ph = self.physics
        usable = ctx.has_data if self.spare is None else ctx.has_data & ~self.spare
        samples = np.where(usable, ph.samples, 0.0).astype(float)
        drift = self.drift_horizon_min
        terms = tuple(
            dataclasses.replace(t, local_steps=max(t.local_steps, drift)) for t in ctx.terms
        )
        return MaflProblem(
            terms=terms,
            samples=samples,
            train_flops=ph.train_flops,
            speed=ph.speed,
            kappa=ph.kappa,
            upload_j=ph.upload_j,
            comm_s=ph.comm_s,
            round_s=ph.round_s,
            session_rounds=ctx.session_rounds,
            available=ctx.available,
            busy_from=np.maximum(ctx.busy_until - ctx.first_round, 0),
            channel_used=ctx.channel_used,
            channels=ctx.channels,
            beta_e=self.beta_e,
            iterations=ctx.iterations,
            batch=ctx.batch,
            max_iterations=self.max_iterations,
            min_iterations=self.min_iterations,
            batch_range=self.batch_range,
            energy_budget=self.energy_budget,
            min_sessions=self.min_sessions if min_sessions is None else min_sessions,
            recent=ctx.recent_work if self.work_visits else ctx.recent,
            participation=self.participation,
            work_visits=self.work_visits,
            balance=self.balance,
        )

    def __call__(self, ctx: PlanContext) -> Schedule:
        if len(ctx.terms) != ctx.models:
            raise ValueError("the MA-FL optimiser needs the surrogate's terms for every model")
        began = time.perf_counter()
        if self.calibration is not None:
            ctx = dataclasses.replace(
                ctx, terms=self.calibration.calibrate(ctx.first_round, ctx.terms)
            )
        fixed = _as_candidates(round_robin(ctx, self.spare)) if self.mode == "sizing" else None
        for floor in self.floors(ctx):
            problem = self.problem(ctx, floor)
            try:
                result = plan(problem, fixed, size=self.mode != "schedule")
                break
            except Infeasible:
                if floor == self.min_sessions:
                    raise
        if self.calibration is not None:
            self.calibration.credit(ctx.first_round, problem, result.candidates, result)
        solve_s = time.perf_counter() - began
        out = to_schedule(ctx, result)
        self.log.append(
            PlanRecord(
                ctx.first_round,
                result.relaxed,
                result.rounded,
                result.sizing,
                result.objective,
                int(result.chosen.sum()),
                solve_s,
                [float(t.gap) for t in ctx.terms],
                [float(t.rate) for t in ctx.terms],
                problem.min_sessions,
            )
        )
        return out

    def floors(self, ctx: PlanContext) -> list[int]:
        """The per-model session floors to try, highest first: the model share's (down by a
        quarter at a time while above ``min_sessions``), then ``min_sessions``."""
        free = float(np.sum(np.maximum(ctx.channels - ctx.channel_used, 0)))
        top = int(self.model_share * free / max(ctx.models, 1)) if self.mode != "sizing" else 0
        out = []
        while top > self.min_sessions:
            out.append(top)
            top = min(top - 1, int(0.75 * top))
        return [*out, self.min_sessions]


def _as_candidates(schedule: Schedule) -> Candidates:
    """A schedule's sessions as candidates (rounds relative to its first round)."""
    rows = np.array(
        [(x.device, x.model, x.start, x.upload) for x in schedule.sessions()], dtype=np.int64
    ).reshape(-1, 4)
    rows[:, 2:] -= schedule.first_round
    return Candidates(rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3])


def to_schedule(ctx: PlanContext, result: Plan) -> Schedule:
    """The plan's chosen candidates as S and U, with its gamma and B."""
    out = ctx.blank()
    c = result.candidates
    for i in np.flatnonzero(result.chosen > 0.5):
        out.starts[c.device[i], c.model[i], c.start[i]] = True
        out.uploads[c.device[i], c.model[i], c.upload[i]] = True
    return Schedule(out.starts, out.uploads, result.gamma, result.batch, ctx.first_round)

"""MA-FL as a round algorithm: several models trained at once by shared devices (SPEC B).

Time is slotted into rounds of ``round_s`` seconds; the driver closes each round at its end and
the sessions carry over. Every ``step`` rounds the algorithm asks its scheduler for a schedule
over the next ``horizon`` rounds, validates it and commits the sessions that start within the
step (receding horizon; the first ``warmup_rounds`` rounds are planned by the injected
``warmup`` scheduler, synchronous round-robin). Before each later plan, a scheduler that asks
for them (``needs_terms``) gets the surrogate's constants measured at the current global models
(the injected ``measure``, a ``fedtempo.multitask.probes.Prober`` in the simulator).

A session (device n, model m, start round t, upload round u, gamma, B) trains model m's global
vector of round t with gamma iterations of batch B; its timeline is: download, compute, wait
until round u, upload. A delta is applied at the end of the round it *arrives* in (a late
session is applied stale, later): w_m <- w_m + server_lr x sum (D_n / sum D) delta over that
round's arrivals of m (FedAvg over the arrivals; with ``normalise_steps``, FedNova's
step-normalised mean, so that sessions sized to different gamma weigh by data share alone).
Planning uses each device's mean link rates; the sessions see the real (faded, trace-driven)
ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from fedtempo.aggregation.reducers import step_normalised_delta
from fedtempo.aggregation.sync import FedAvg
from fedtempo.algorithms.jobs import TrainingJob, job_spec
from fedtempo.algorithms.protocol import (
    ClientPlan,
    Compute,
    Download,
    ModelState,
    RoundOutcome,
    RoundPlan,
    RoundView,
    Upload,
    WaitUntil,
    Workload,
)
from fedtempo.alloc.mafl import TaskTerms, visit_work
from fedtempo.client.local import Update
from fedtempo.multitask.optimised import Physics
from fedtempo.multitask.schedule import Schedule, Session, validate
from fedtempo.multitask.schedulers import PlanContext, round_robin
from fedtempo.system.availability import Availability

Scheduler = Callable[[PlanContext], Schedule]
Measure = Callable[
    [Mapping[int, torch.Tensor], Mapping[int, torch.Tensor | None]], tuple[TaskTerms, ...]
]


@dataclass(frozen=True)
class MaflSettings:
    """Rounds of ``round_s`` s; C = ``channels`` uploads per round; nominal gamma
    (``iterations``) and B (``batch``) for the baselines and for sizing session lengths."""

    round_s: float
    rounds: int
    channels: int
    horizon: int
    step: int
    iterations: int
    batch: int
    server_lr: float = 1.0
    warmup_rounds: int = 0
    memory_rounds: int = 12  # the past over which a plan counts each device's sessions
    normalise_steps: bool = False  # FedNova's mean over a round's arrivals (not FedAvg's)


@dataclass
class RoundLog:
    """Per round: sessions started, updates applied per model, energy of the sessions that
    arrived in it (J)."""

    round: int
    started: int = 0
    applied: dict[int, int] = field(default_factory=dict)
    energy_j: float = 0.0


@dataclass
class MaflState:
    """Every model's global vector (``models`` by task id), the previous vector of each (for
    the probes), what is committed (``busy_until[n]``: round from which device n is free;
    ``channel_use[t]``: uploads committed in round t; ``pending``: sessions not yet started),
    the sessions' dispatch numbers and the per-round log."""

    models: dict[int, ModelState]
    previous: dict[int, torch.Tensor | None]
    busy_until: np.ndarray
    channel_use: dict[int, int] = field(default_factory=dict)
    pending: list[Session] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    dispatches: dict[tuple[int, int], int] = field(default_factory=dict)
    log: list[RoundLog] = field(default_factory=list)
    next_plan: int = 0

    def model(self, task: int) -> ModelState:
        return self.models[task]

    def next_dispatch(self, task: int, device: int) -> int:
        n = self.dispatches.get((task, device), 0)
        self.dispatches[(task, device)] = n + 1
        return n


@dataclass(frozen=True)
class MaflRounds:
    """The MA-FL algorithm for ``workloads`` (one per model, index m = task id)."""

    settings: MaflSettings
    scheduler: Scheduler
    physics: Physics
    workloads: Sequence[Workload]
    measure: Measure | None = None
    warmup: Scheduler = round_robin

    @property
    def has_data(self) -> np.ndarray:
        return self.physics.samples > 0

    def session_rounds(self) -> np.ndarray:
        """Rounds a session needs at the nominal gamma x B (download + compute + upload)."""
        ph, s = self.physics, self.settings
        compute = ph.train_flops[None, :] * s.iterations * s.batch / ph.speed[:, None]
        rounds = np.ceil((compute + ph.comm_s) / s.round_s)
        return np.asarray(np.maximum(1, rounds), dtype=np.int64)

    def init(self, params: Mapping[int, torch.Tensor]) -> MaflState:
        devices = self.physics.samples.shape[0]
        return MaflState(
            models={w.task: ModelState(params[w.task]) for w in self.workloads},
            previous={w.task: None for w in self.workloads},
            busy_until=np.zeros(devices, dtype=np.int64),
        )

    # ---- planning --------------------------------------------------------------------------

    def _available(self, avail: Availability, first: int, horizon: int) -> np.ndarray:
        length, devices = self.settings.round_s, self.physics.samples.shape[0]
        out = np.zeros((devices, horizon), dtype=bool)
        for n in range(devices):
            for t in range(horizon):
                end = avail.window_end(n, (first + t) * length)
                out[n, t] = end is not None and end >= (first + t + 1) * length
        return out

    def context(self, state: MaflState, first: int, view: RoundView) -> PlanContext:
        """What the scheduler sees from round ``first``; the surrogate's constants are measured
        only after the warm-up and for a scheduler that uses them (``needs_terms``)."""
        s = self.settings
        wanted = first >= s.warmup_rounds and getattr(self.scheduler, "needs_terms", False)
        horizon = min(s.horizon, s.rounds - first)
        used = np.array([state.channel_use.get(first + t, 0) for t in range(horizon)])
        terms: tuple[TaskTerms, ...] = ()
        if wanted and self.measure is not None:
            params = {m: st.params for m, st in state.models.items()}
            terms = self.measure(params, state.previous)
        recent = np.zeros(self.physics.samples.shape)
        recent_work = np.zeros(self.physics.samples.shape)
        for x in state.sessions:
            if x.start >= first - s.memory_rounds:
                recent[x.device, x.model] += 1
                recent_work[x.device, x.model] += visit_work(
                    x.iterations * x.batch, s.iterations * s.batch
                )
        return PlanContext(
            first_round=first,
            horizon=horizon,
            has_data=self.has_data,
            available=self._available(view.availability, first, horizon),
            channels=s.channels,
            session_rounds=self.session_rounds(),
            busy_until=state.busy_until.copy(),
            channel_used=used,
            iterations=s.iterations,
            batch=s.batch,
            terms=terms,
            recent=recent,
            recent_work=recent_work,
        )

    def commit(self, state: MaflState, first: int, until: int, view: RoundView) -> None:
        """Plan from ``first``, validate, commit the sessions starting before ``until``."""
        ctx = self.context(state, first, view)
        warm = first < self.settings.warmup_rounds
        schedule = self.warmup(ctx) if warm else self.scheduler(ctx)
        validate(
            schedule,
            self.has_data,
            self.settings.channels,
            ctx.available,
            ctx.busy_until,
            ctx.channel_used,
        )
        committed = [x for x in schedule.sessions() if x.start < until]
        for x in committed:
            state.busy_until[x.device] = max(state.busy_until[x.device], x.upload + 1)
            state.channel_use[x.upload] = state.channel_use.get(x.upload, 0) + 1
        state.sessions.extend(committed)
        state.pending.extend(committed)

    def _plan(self, state: MaflState, x: Session) -> ClientPlan:
        w, current = self.workloads[x.model], state.models[x.model]
        job = TrainingJob(
            w.task,
            x.device,
            current.version,
            current.params,
            state.next_dispatch(w.task, x.device),
            iterations=x.iterations,
            batch_size=x.batch,
        )
        bits = float(w.profile.size_bits)
        flops = float(w.profile.train_flops) * job_spec(w.spec, job).samples_processed(
            w.samples[x.device]
        )
        upload_at = x.upload * self.settings.round_s
        return ClientPlan(job, (Download(bits), Compute(flops), WaitUntil(upload_at), Upload(bits)))

    # ---- the protocol ----------------------------------------------------------------------

    def plan_round(self, state: MaflState, cohort: Sequence[int], view: RoundView) -> RoundPlan:
        """Commits the next horizon's sessions when one is due (recorded in ``state``), then
        plans the sessions that start in this round."""
        s, r = self.settings, len(state.log)
        if r == state.next_plan:
            nxt = r + s.step
            if r < s.warmup_rounds:
                nxt = min(nxt, s.warmup_rounds)
            state.next_plan = nxt
            self.commit(state, r, nxt, view)
        starting = [x for x in state.pending if x.start == r]
        state.pending = [x for x in state.pending if x.start > r]
        plans = tuple(self._plan(state, x) for x in starting)
        return RoundPlan(plans, info=r, close_at=(r + 1) * s.round_s, carry_over=True)

    def aggregate(self, state: MaflState, outcome: RoundOutcome) -> MaflState:
        rule = FedAvg(self.settings.server_lr)
        log = RoundLog(int(outcome.plan.info), started=len(outcome.plan.clients))
        for m, current in state.models.items():
            updates = [r.update for r in outcome.results if r.update.task == m]
            if not updates:
                continue
            state.previous[m] = current.params
            current.params = self._apply(rule, current.params, updates)
            current.version += 1
            log.applied[m] = len(updates)
        log.energy_j = sum(r.update.energy_j for r in outcome.results)
        state.log.append(log)
        return state

    def _apply(self, rule: FedAvg, params: torch.Tensor, updates: list[Update]) -> torch.Tensor:
        """The new global vector of one model from its arrivals in a round."""
        useful = [u for u in updates if u.num_samples > 0]
        if not self.settings.normalise_steps or not useful:
            return rule.aggregate(params, updates)
        return params + rule.server_lr * step_normalised_delta(useful)

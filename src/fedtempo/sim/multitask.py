"""MA-FL on the virtual clock: several models trained at once by shared devices (SPEC B).

Time is slotted into rounds of ``round_s`` seconds. Every ``step`` rounds the server asks the
scheduler for a schedule over the next ``horizon`` rounds, validates it and commits the
sessions that start within the step (receding horizon; the first ``warmup_rounds`` rounds are
planned by synchronous round-robin). Before each later plan, a scheduler that asks for them
(``needs_terms``) gets the surrogate's constants measured at the current global models
(``fedtempo.multitask.estimate``: gradient probes and a probe round on a few devices, not
charged to the devices' energy).

A session (device n, model m, start round t, upload round u, gamma, B) runs as a process:
- it begins at t x round_s, or when the device finishes its previous session if that overran;
- download of model m's current global vector, gamma x B samples of real training
  (``train_local``), then the upload, which starts no earlier than round u;
- the delta is applied at the end of the round it *arrives* in (a late session is applied
  stale, later): w_m <- w_m + server_lr x sum (D_n / sum D) delta over that round's arrivals
  of m (FedAvg over the arrivals).
Energy: E_cmp and E_up (SPEC 0) as ``compute`` and ``upload`` events. Planning uses each
device's mean link rates; the sessions see the real (faded, trace-driven) ones. Sessions are
not interrupted by availability changes and failure injection does not apply (the schedule
already keeps devices off rounds in which they are unavailable).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fedtempo.aggregation.sync import FedAvg
from fedtempo.alloc.mafl import TaskTerms
from fedtempo.client.local import Update, train_local
from fedtempo.multitask.estimate import probe, probe_round, terms_from
from fedtempo.multitask.optimised import Physics
from fedtempo.multitask.schedule import Schedule, Session, validate
from fedtempo.multitask.schedulers import PlanContext, round_robin
from fedtempo.sim.task import SimTask
from fedtempo.sim.timeline import Runtime

Scheduler = Callable[[PlanContext], Schedule]


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
    probe_samples: int = 512  # pooled evaluation sample of the probes
    probe_per_device: int = 128
    probe_devices: int = 4  # devices in the probe round


@dataclass
class RoundLog:
    """Per round: sessions started, updates applied per model, energy of the sessions that
    ended in it (J)."""

    round: int
    started: int = 0
    applied: dict[int, int] = field(default_factory=dict)
    energy_j: float = 0.0


@dataclass(frozen=True)
class _Pools:
    """Fixed samples of one model's training data for the probes: a few per device, a pooled
    evaluation sample, and the devices of the probe round (those with the most data)."""

    devices: np.ndarray  # devices with data
    per_device: list[tuple[torch.Tensor, torch.Tensor]]
    evaluation: tuple[torch.Tensor, torch.Tensor]
    round_devices: np.ndarray


class MaflServer:
    """Runs a multi-model schedule for ``tasks`` (one ``SimTask`` per model)."""

    def __init__(
        self,
        rt: Runtime,
        tasks: Sequence[SimTask],
        settings: MaflSettings,
        scheduler: Scheduler,
        physics: Physics,
        *,
        weights: Sequence[float] | None = None,
    ) -> None:
        self.rt, self.tasks, self.s = rt, list(tasks), settings
        self.scheduler = scheduler
        self.physics = physics
        self.weights = list(weights) if weights is not None else [1.0] * len(tasks)
        self.samples = physics.samples
        self.devices = self.samples.shape[0]
        self.has_data = self.samples > 0
        self._rounds = self.session_rounds()
        self.rule = FedAvg(settings.server_lr)
        self.busy_until = np.zeros(self.devices, dtype=np.int64)
        self.channel_use: dict[int, int] = {}
        self.device_free = np.zeros(self.devices)
        self.arrivals: dict[tuple[int, int], list[Update]] = {}
        self.log: list[RoundLog] = []
        self.sessions: list[Session] = []
        self.previous: list[torch.Tensor | None] = [None] * len(self.tasks)
        self._probes = 0

    # ---- planning --------------------------------------------------------------------------

    def session_rounds(self) -> np.ndarray:
        """Rounds a session needs at the nominal gamma x B (download + compute + upload)."""
        ph, s = self.physics, self.s
        compute = ph.train_flops[None, :] * s.iterations * s.batch / ph.speed[:, None]
        return np.maximum(1, np.ceil((compute + ph.comm_s) / s.round_s)).astype(np.int64)

    def _available(self, first: int, horizon: int) -> np.ndarray:
        avail, length = self.rt.devices.availability, self.s.round_s
        out = np.zeros((self.devices, horizon), dtype=bool)
        for n in range(self.devices):
            for t in range(horizon):
                end = avail.window_end(n, (first + t) * length)
                out[n, t] = end is not None and end >= (first + t + 1) * length
        return out

    def context(self, first: int) -> PlanContext:
        """What the scheduler sees from round ``first``; the surrogate's constants are measured
        only after the warm-up and for a scheduler that uses them (``needs_terms``)."""
        measure = first >= self.s.warmup_rounds and getattr(self.scheduler, "needs_terms", False)
        horizon = min(self.s.horizon, self.s.rounds - first)
        used = np.array([self.channel_use.get(first + t, 0) for t in range(horizon)])
        return PlanContext(
            first_round=first,
            horizon=horizon,
            has_data=self.has_data,
            available=self._available(first, horizon),
            channels=self.s.channels,
            session_rounds=self._rounds,
            busy_until=self.busy_until.copy(),
            channel_used=used,
            iterations=self.s.iterations,
            batch=self.s.batch,
            terms=self.current_terms() if measure else (),
        )

    def plan(self, first: int, until: int) -> list[Session]:
        """Plan from ``first``, validate, commit the sessions starting before ``until``."""
        ctx = self.context(first)
        warm = first < self.s.warmup_rounds
        schedule = round_robin(ctx) if warm else self.scheduler(ctx)
        validate(
            schedule,
            self.has_data,
            self.s.channels,
            ctx.available,
            ctx.busy_until,
            ctx.channel_used,
        )
        committed = [x for x in schedule.sessions() if x.start < until]
        for x in committed:
            self.busy_until[x.device] = max(self.busy_until[x.device], x.upload + 1)
            self.channel_use[x.upload] = self.channel_use.get(x.upload, 0) + 1
        self.sessions.extend(committed)
        return committed

    # ---- the surrogate's constants ---------------------------------------------------------

    @functools.cached_property
    def _pools(self) -> list[_Pools]:
        """Drawn on the first measurement (a scheduler without ``needs_terms`` never pays for
        them); each model's draw has its own stream, so when it happens changes nothing."""
        return [self._probe_pools(m, t) for m, t in enumerate(self.tasks)]

    def _probe_pools(self, m: int, task: SimTask) -> _Pools:
        tr, s = task.trainer, self.s
        rng = self.rt.streams.numpy("mafl-probe", task.task)
        devices = np.flatnonzero(self.has_data[:, m])
        per_device, everything = [], []
        for n in devices:
            idx = np.arange(len(tr.y))[tr.client_indices[n]]
            everything.append(idx)
            pick = np.sort(rng.choice(idx, size=min(s.probe_per_device, len(idx)), replace=False))
            per_device.append((tr.x[pick], tr.y[pick]))
        pool = np.concatenate(everything)
        pick = np.sort(rng.choice(pool, min(s.probe_samples, len(pool)), replace=False))
        ranked = devices[np.argsort(-self.samples[devices, m], kind="stable")]
        return _Pools(devices, per_device, (tr.x[pick], tr.y[pick]), ranked[: s.probe_devices])

    def current_terms(self) -> tuple[TaskTerms, ...]:
        """Measure every model's constants at its current global model (``probe`` and
        ``probe_round`` of ``fedtempo.multitask.estimate``)."""
        self._probes += 1
        out = []
        for m, task in enumerate(self.tasks):
            pools, tr = self._pools[m], task.trainer
            rho = self.samples[:, m] / self.samples[:, m].sum()
            params = task.model.params
            measured = probe(
                tr.model, params, self.previous[m], pools.per_device, rho[pools.devices]
            )
            chosen = pools.round_devices
            gens = [self.rt.streams.torch("mafl-probe-round", m, self._probes, n) for n in chosen]
            curve = probe_round(
                tr.model,
                params,
                [tr.data(int(n)) for n in chosen],
                rho[chosen],
                pools.evaluation,
                dataclasses.replace(tr.spec, batch_size=self.s.batch),
                gens,
            )
            typical = float(np.median(self.samples[pools.devices, m]))
            relative = np.ones(self.devices)
            relative[pools.devices] = measured.relative_loss
            out.append(terms_from(measured, curve, typical, self.weights[m], relative))
        return tuple(out)

    # ---- execution -------------------------------------------------------------------------

    def run(self) -> Generator[Any, Any, None]:
        env, s = self.rt.env, self.s
        pending: list[Session] = []
        next_plan = 0
        for r in range(s.rounds):
            if r == next_plan:
                next_plan = r + s.step
                if r < s.warmup_rounds:
                    next_plan = min(next_plan, s.warmup_rounds)
                pending.extend(self.plan(r, next_plan))
            log = RoundLog(r)
            self.log.append(log)
            for x in [x for x in pending if x.start == r]:
                env.process(self._session(x, log))
                log.started += 1
            pending = [x for x in pending if x.start > r]
            yield env.timeout((r + 1) * s.round_s - env.now)
            self._apply(r, log)

    def _apply(self, r: int, log: RoundLog) -> None:
        for m, task in enumerate(self.tasks):
            updates = self.arrivals.pop((m, r), [])
            if not updates:
                continue
            self.previous[m] = task.model.params
            task.model.params = self.rule.aggregate(task.model.params, updates)
            task.model.version += 1
            task.model.updates_applied += len(updates)
            log.applied[m] = len(updates)
            self.rt.recorder.event(
                self.rt.env.now, "aggregate", m, -1, task.model.version, 0, float(len(updates))
            )

    def _session(self, x: Session, log: RoundLog) -> Generator[Any, Any, None]:
        env, dev, rec, s = self.rt.env, self.rt.devices, self.rt.recorder, self.s
        task, n = self.tasks[x.model], x.device
        if self.device_free[n] > env.now:  # the previous session overran
            yield env.timeout(self.device_free[n] - env.now)
        self.device_free[n] = math.inf
        version, start = task.model.version, task.model.params
        bits = task.profile.size_bits
        rec.event(env.now, "dispatch", x.model, n, version)
        t = dev.download_time(n, bits, env.now)
        yield env.timeout(t)
        rec.event(env.now, "download", x.model, n, version, bits // 8, t)
        spec = dataclasses.replace(task.trainer.spec, iterations=x.iterations, batch_size=x.batch)
        data_x, data_y = task.trainer.data(n)
        gen = task.trainer.generator(n, version, task.next_dispatch(n))
        delta, steps, loss = train_local(task.trainer.model, start, data_x, data_y, spec, gen)
        flops = float(task.profile.train_flops) * spec.samples_processed(len(data_y))
        t, e_cmp = dev.compute_time(n, flops, env.now), dev.compute_energy(n, flops)
        yield env.timeout(t)
        rec.event(env.now, "compute", x.model, n, version, 0, t, e_cmp)
        if env.now < x.upload * s.round_s:
            yield env.timeout(x.upload * s.round_s - env.now)
        t = dev.upload_time(n, bits, env.now)
        yield env.timeout(t)
        e_up = dev.upload_energy(n, t)
        rec.event(env.now, "upload", x.model, n, version, bits // 8, t, e_up)
        self.device_free[n] = env.now
        arrived = int(env.now // s.round_s)
        self.log[min(arrived, len(self.log) - 1)].energy_j += e_cmp + e_up
        update = Update(n, x.model, version, delta, len(data_y), steps, loss, bits // 8)
        self.arrivals.setdefault((x.model, arrived), []).append(
            dataclasses.replace(update, energy_j=e_cmp + e_up)
        )

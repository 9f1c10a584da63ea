"""SplitFed rounds on the virtual clock (SPEC section D).

Each round: a cohort of the available devices with data (sampled like the synchronous server);
the planner reads the round's problem (each device's compute speed and link rates at the round's
start, its iterations and batch) and picks cuts and server shares; each device trains for real
(``train_split``) and its timeline goes on the clock:

    download the client part (M(l) bits)
    K times: client forward+backward of b samples, upload b S(l) bits of activations,
             server forward+backward at phi_n F FLOP/s, download b S(l) bits of gradients
    upload the client part

(with l = L, plain FL, the K iterations are one computation: nothing crosses per batch). When
the last device is done, client and server parts are averaged layer-wise: FedAvg of the whole
vectors, sample-weighted. The rates are read from the traces at each transfer, so the measured
latency differs from the plan's (which uses the rates at the round's start) when links vary.
Availability is checked at the round's start only; failure injection does not apply.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from fedtempo.aggregation.sync import FedAvg
from fedtempo.alloc.sfl import SflAllocation, SflProblem
from fedtempo.client.local import Update
from fedtempo.sim.session import Runtime
from fedtempo.sim.sync import close_round, open_round
from fedtempo.sim.task import SimTask
from fedtempo.split.profile import CutProfile
from fedtempo.split.training import train_split

Planner = Callable[[SflProblem], SflAllocation]


@dataclass(frozen=True)
class SplitRoundLog:
    """One round: the problem, the plan, and each device's measured latency."""

    round: int
    time: float
    clients: list[int]
    problem: SflProblem
    plan: SflAllocation
    measured: np.ndarray  # seconds per client of ``clients``


class SplitFedServer:
    """Synchronous SplitFed rounds for one task whose model is splittable."""

    def __init__(
        self,
        rt: Runtime,
        task: SimTask,
        *,
        model: nn.Sequential,
        profile: CutProfile,
        planner: Planner,
        server_flops: float,
        clients_per_round: int,
        rounds: int,
    ) -> None:
        if not server_flops > 0:
            raise ValueError(f"server compute must be > 0 FLOP/s, got {server_flops}")
        self.rt, self.task, self.model, self.profile = rt, task, model, profile
        self.planner, self.server_flops = planner, server_flops
        self.clients_per_round, self.rounds = clients_per_round, rounds
        self.eligible = task.trainer.clients_with_data()
        self.rule = FedAvg()
        self.log: list[SplitRoundLog] = []

    def problem(self, cohort: list[int], now: float) -> SflProblem:
        """The round's instance: speeds and rates at ``now``; K b = the samples processed."""
        dev, trainer, prof = self.rt.devices, self.task.trainer, self.profile
        ref_flops, ref_bits = prof.total_flops, float(prof.client_bits[-1])
        speed = [ref_flops / dev.compute_time(c, ref_flops, now) for c in cohort]
        up = [ref_bits / dev.upload_time(c, ref_bits, now) for c in cohort]
        down = [ref_bits / dev.download_time(c, ref_bits, now) for c in cohort]
        steps = np.array([trainer.num_steps(c) for c in cohort], dtype=np.float64)
        n = [trainer.num_samples(c) for c in cohort]
        samples = np.array([trainer.spec.samples_processed(k) for k in n], dtype=np.float64)
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

    def _device(
        self, c: int, cut: int, share: float, steps: int, batch: float, speed: float, version: int
    ) -> Generator[Any, Any, float]:
        """Device c's round on the clock; returns its latency. ``speed``: its FLOP/s for the
        whole round, drawn once at the round's start like a FedAvg session's (a draw per
        iteration would average the device's compute noise away and flatter SplitFed)."""
        env, dev, rec, prof = self.rt.env, self.rt.devices, self.rt.recorder, self.profile
        task, start, i = self.task.task, env.now, cut - 1
        part_bits = float(prof.client_bits[i])
        yield env.timeout(dev.download_time(c, part_bits, env.now))
        split = cut < len(prof.names)
        for _ in range(steps if split else 1):
            flops = batch * prof.client_flops[i] * (1 if split else steps)
            t = flops / speed
            yield env.timeout(t)
            rec.event(env.now, "compute", task, c, version, 0, t, dev.compute_energy(c, flops))
            if not split:
                break
            bits = batch * float(prof.smashed_bits[i])
            t = dev.upload_time(c, bits, env.now)
            yield env.timeout(t)
            rec.event(
                env.now, "smashed", task, c, version, int(bits // 8), t, dev.upload_energy(c, t)
            )
            yield env.timeout(batch * float(prof.server_flops[i]) / (share * self.server_flops))
            yield env.timeout(dev.download_time(c, bits, env.now))
        t = dev.upload_time(c, part_bits, env.now)
        yield env.timeout(t)
        rec.event(
            env.now, "upload", task, c, version, int(part_bits // 8), t, dev.upload_energy(c, t)
        )
        return env.now - start

    def _train(self, c: int, cut: int) -> Update:
        task, trainer = self.task, self.task.trainer
        x, y = trainer.data(c)
        version = task.model.version
        gen = trainer.generator(c, version, task.next_dispatch(c))
        delta, steps, loss = train_split(
            self.model, cut, task.model.params, x, y, trainer.spec, gen
        )
        return Update(c, task.task, version, delta, trainer.num_samples(c), steps, loss)

    def run(self) -> Generator[Any, Any, None]:
        env, task = self.rt.env, self.task
        for round_ in range(self.rounds):
            cohort = yield from open_round(
                self.rt, task, self.eligible, round_, self.clients_per_round
            )
            if not cohort:
                return
            start = env.now
            p = self.problem(cohort, start)
            plan = self.planner(p)
            stuck = np.flatnonzero(~np.isfinite(plan.latency))
            if len(stuck):  # a split device with no server share would never finish
                c = cohort[int(stuck[0])]
                raise ValueError(
                    f"SFL plan ({plan.policy}) leaves client {c} without a finite "
                    f"latency (cut {int(plan.cuts[stuck[0]])}, share 0)"
                )
            updates = [self._train(c, int(plan.cuts[i])) for i, c in enumerate(cohort)]
            procs = [
                env.process(
                    self._device(
                        c,
                        int(plan.cuts[i]),
                        float(plan.shares[i]),
                        int(p.iterations[i]),
                        float(p.batch[i]),
                        float(p.speed[i]),
                        task.model.version,
                    )
                )
                for i, c in enumerate(cohort)
            ]
            yield env.all_of(procs)
            measured = np.array([pr.value for pr in procs])
            params = self.rule.aggregate(task.model.params, updates)
            close_round(self.rt, task, params, len(updates))
            self.log.append(SplitRoundLog(round_, start, cohort, p, plan, measured))

"""Rounds of partial-model pruning and personalization (SPEC section E) on the virtual clock.

Each round: a cohort of the available devices with data (sampled like the synchronous server)
sees that round's wireless channel; the allocation policy picks every device's pruning ratio and
bandwidth share (devices it cannot serve skip the round); each device trains (personal phase,
then the masked global phase), computes for T_v + (1 - rho) T_u seconds and uploads its kept
values and mask (their real size) at the Shannon rate of its share; when the last upload has
landed the server averages each global coordinate over the devices that kept it. Personal parts
never leave the devices: ``PersonalState`` holds them and the evaluator reads them.
Availability is checked when the round starts only (a device is not interrupted mid-round), and
failure injection does not apply to these rounds.

Costs: the global phase costs the model's train FLOPs per sample; the personal phase costs a
forward pass plus the backward share of the personal parameters (the frozen global layers need
no backward pass).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fedtempo.alloc.pruning import PruningAllocation, PruningProblem
from fedtempo.client.local import LocalSpec, evaluate
from fedtempo.personalize.masks import MaskedUpload, kept_count, masked_average, upload_bytes
from fedtempo.personalize.training import train_personalized
from fedtempo.sim.session import Runtime
from fedtempo.sim.sync import close_round, open_round
from fedtempo.sim.task import SimTask
from fedtempo.system.links import WirelessLink, dbm_to_watt

# A policy maps a round's problem to (allocation over its devices, indices left out).
Policy = Callable[[PruningProblem], tuple[PruningAllocation, list[int]]]


@dataclass
class PersonalState:
    """The devices' personal parts. ``personal`` marks the personal entries of the flat vector;
    ``parts[c]`` is device c's personal part once it has trained (``initial`` before)."""

    personal: torch.Tensor
    initial: torch.Tensor
    parts: dict[int, torch.Tensor] = field(default_factory=dict)

    def model_of(self, client: int, global_params: torch.Tensor) -> torch.Tensor:
        """Device ``client``'s full model: the global part with its own personal part."""
        vec = global_params.clone()
        vec[self.personal] = self.parts.get(client, self.initial)
        return vec


def personalized_evaluator(
    state: PersonalState,
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    tests: Sequence[np.ndarray],
) -> Callable[[torch.Tensor], tuple[float, float]]:
    """Evaluates every device's own model on its own test split (indices into x, y); returns
    the test-sample-weighted mean accuracy and loss."""
    clients = [c for c, idx in enumerate(tests) if len(idx)]
    if not clients:
        raise ValueError("personalized evaluation needs per-device test splits (none is set)")

    def run(params: torch.Tensor) -> tuple[float, float]:
        acc = loss = 0.0
        total = 0
        for c in clients:
            idx = torch.from_numpy(np.asarray(tests[c], dtype=np.int64))
            a, l_ = evaluate(model, state.model_of(c, params), x[idx], y[idx])
            acc, loss, total = acc + a * len(idx), loss + l_ * len(idx), total + len(idx)
        return acc / total, loss / total

    return run


@dataclass(frozen=True)
class RoundLog:
    """One round as the server planned and measured it (latencies from the real upload size)."""

    round: int
    time: float
    clients: list[int]
    problem: PruningProblem
    allocation: PruningAllocation
    left_out: list[int]  # client ids that skipped the round
    latency: np.ndarray  # per client of ``clients``; nan for the left-out ones


@dataclass(frozen=True)
class _Planned:
    client: int
    compute_s: float
    compute_j: float
    upload_s: float
    upload_bytes: int


class PrunedServer:
    """Synchronous rounds of pruned, personalized training for one task."""

    def __init__(
        self,
        rt: Runtime,
        task: SimTask,
        *,
        state: PersonalState,
        channel: WirelessLink,
        policy: Policy,
        bandwidth_hz: float,
        threshold_s: float | None,
        threshold_factor: float,
        rho_max: float,
        personal_spec: LocalSpec,
        clients_per_round: int,
        rounds: int,
    ) -> None:
        self.rt, self.task, self.state = rt, task, state
        self.channel, self.policy = channel, policy
        self.bandwidth_hz, self.rho_max = bandwidth_hz, rho_max
        self.threshold, self.threshold_factor = threshold_s, threshold_factor
        self.personal_spec = personal_spec
        self.clients_per_round, self.rounds = clients_per_round, rounds
        self.eligible = task.trainer.clients_with_data()
        self.log: list[RoundLog] = []
        glob = int((~state.personal).sum())
        self.global_numel = glob
        frac = 1.0 - glob / len(state.personal)  # personal share of the parameters
        prof = task.profile
        self.personal_flops = prof.forward_flops + frac * (prof.train_flops - prof.forward_flops)

    def _times(self, c: int, now: float) -> tuple[float, float]:
        """(T_u, T_v): device c's unpruned global-phase and personal-phase compute times."""
        dev = self.rt.devices
        return dev.compute_time(c, self._global_flops(c), now), dev.compute_time(
            c, self._personal_flops(c), now
        )

    def _global_flops(self, c: int) -> float:
        return self.task.compute_flops(c)

    def _personal_flops(self, c: int) -> float:
        if not bool(self.state.personal.any()):
            return 0.0
        n = self.task.trainer.num_samples(c)
        return self.personal_flops * self.personal_spec.samples_processed(n)

    def problem(self, cohort: list[int], now: float) -> PruningProblem:
        """This round's instance: compute times, channel (p g / N0 per device), sizes."""
        times = np.array([self._times(c, now) for c in cohort]).reshape(len(cohort), 2)
        n0 = dbm_to_watt(self.channel.noise_dbm_hz)
        snr = np.array([self.channel.power_w * self.channel.gain(c, now) / n0 for c in cohort])
        sizes = np.array([self.task.trainer.num_samples(c) for c in cohort], dtype=np.float64)
        p = PruningProblem(
            weights=sizes / sizes.sum(),
            t_global=times[:, 0],
            t_personal=times[:, 1],
            model_bits=32.0 * self.global_numel,
            threshold=np.inf,
            bandwidth=self.bandwidth_hz,
            rho_max=self.rho_max,
            rate="shannon",
            snr_per_hz=snr,
        )
        if self.threshold is None:  # the first round's slowest unpruned device, scaled
            share = self.bandwidth_hz / len(cohort)
            worst = max(p.latency(i, 0.0, share) for i in range(len(cohort)))
            self.threshold = self.threshold_factor * worst
        return dataclasses.replace(p, threshold=self.threshold)

    def _device(self, plan: _Planned, version: int) -> Generator[Any, Any, None]:
        env, rec, task = self.rt.env, self.rt.recorder, self.task.task
        yield env.timeout(plan.compute_s)
        rec.event(env.now, "compute", task, plan.client, version, 0, plan.compute_s, plan.compute_j)
        yield env.timeout(plan.upload_s)
        energy = self.rt.devices.upload_energy(plan.client, plan.upload_s)
        rec.event(
            env.now, "upload", task, plan.client, version, plan.upload_bytes, plan.upload_s, energy
        )

    def _train(self, c: int, rho: float, round_: int) -> tuple[MaskedUpload, torch.Tensor]:
        """Train device c with ratio rho: its masked global upload and its new personal part
        (which takes effect when the round ends)."""
        trainer, state = self.task.trainer, self.state
        x, y = trainer.data(c)
        start = state.model_of(c, self.task.model.params)
        gen = self.rt.streams.torch("train", self.task.task, c, round_)
        res = train_personalized(
            trainer.model, start, state.personal, rho, x, y, self.personal_spec, trainer.spec, gen
        )
        glob = ~state.personal
        upload = MaskedUpload(res.vector[glob], res.keep, float(trainer.num_samples(c)))
        return upload, res.vector[state.personal].clone()

    def _plan(self, c: int, rho: float, b: float, p: PruningProblem, i: int) -> _Planned:
        dev = self.rt.devices
        flops = self._personal_flops(c) + (1.0 - rho) * self._global_flops(c)
        nbytes = upload_bytes(self.global_numel, kept_count(self.global_numel, rho))
        compute_s = float(p.t_personal[i] + (1.0 - rho) * p.t_global[i])
        upload_s = 8.0 * nbytes / p.rate_of(i, b)
        return _Planned(c, compute_s, dev.compute_energy(c, flops), upload_s, nbytes)

    def run(self) -> Generator[Any, Any, None]:
        env, task, rec = self.rt.env, self.task, self.rt.recorder
        for round_ in range(self.rounds):
            k = self.clients_per_round
            cohort = yield from open_round(self.rt, task, self.eligible, round_, k)
            if not cohort:
                return
            p = self.problem(cohort, env.now)
            alloc, out = self.policy(p)
            uploads, plans, personal = [], [], {}
            latency = np.full(len(cohort), np.nan)
            for i, c in enumerate(cohort):
                if i in out:
                    rec.event(env.now, "skip", task.task, c, task.model.version)
                    continue
                rho, b = float(alloc.rho[i]), float(alloc.bandwidth[i])
                upload, personal[c] = self._train(c, rho, round_)
                uploads.append(upload)
                plans.append(self._plan(c, rho, b, p, i))
                latency[i] = plans[-1].compute_s + plans[-1].upload_s
            start = env.now
            yield env.all_of([env.process(self._device(pl, task.model.version)) for pl in plans])
            glob = ~self.state.personal
            params = task.model.params.clone()
            params[glob] = masked_average(params[glob], uploads)
            self.state.parts.update(personal)  # the new personal parts take effect with it
            close_round(self.rt, task, params, len(uploads))
            left = [cohort[i] for i in out]
            self.log.append(RoundLog(round_, start, cohort, p, alloc, left, latency))

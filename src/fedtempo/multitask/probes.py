"""Measuring the MA-FL surrogate's constants at the current global models (SPEC B).

``Prober`` holds, per model, fixed probe samples (a few per device, a pooled evaluation sample,
the devices of the probe round: those with the most data, and the held-out sample: the other
devices' probe samples, on which ``ProbeSettings.held_out`` measures the probe round's drift),
drawn on the first measurement from the model's own stream ("mafl-probe", task), so when it
happens changes nothing. A measurement runs the gradient probes and a short probe round
(``fedtempo.multitask.estimate``) and turns them into ``TaskTerms``; with
``ProbeSettings.sessions``, the first measurement also replays many sessions per model
(``fedtempo.multitask.sessions``) for the drift peak. Probes are not charged to the devices'
energy.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedtempo.alloc.mafl import TaskTerms
from fedtempo.client.trainer import ClientTrainer
from fedtempo.multitask.estimate import probe, probe_round, terms_from
from fedtempo.multitask.sessions import (
    SESSION_GRID,
    replay_peak,
    session_losses,
    session_order,
    turn_decay,
)
from fedtempo.rng import Streams


@dataclass(frozen=True)
class ProbeSettings:
    """Sizes of the probes: pooled evaluation samples, samples per device, probe-round devices,
    and the probe round's mini-batch; ``curved_noise``: B_noise weighted by the curvature at
    the training learning rate (else sigma^2 / g^2); ``held_out``: the probe round's loss is
    also measured on the devices that did not train in it, and where little of the round's gain
    carries over there, the drift decay delta is fitted to that curve (``terms_from``; else to
    the pooled curve, mostly the round's own devices' data); ``local_steps_min``: the least
    drift horizon gamma0 the terms get (the one the optimiser plans with); ``sessions``: the
    multi-round drift probe replays that many sessions per model at the first measurement
    (``fedtempo.multitask.sessions``), and where the surrogate's form fitted to the replays
    turns down, the model gets that drift peak (0: off)."""

    batch: int
    samples: int = 512
    per_device: int = 128
    devices: int = 4
    curved_noise: bool = False
    held_out: bool = False
    local_steps_min: float = 0.0
    sessions: int = 0


@dataclass(frozen=True)
class _Pools:
    devices: np.ndarray  # devices with data
    per_device: list[tuple[torch.Tensor, torch.Tensor]]
    evaluation: tuple[torch.Tensor, torch.Tensor]
    round_devices: np.ndarray
    held_out: tuple[torch.Tensor, torch.Tensor] | None  # None: not measured, or no device left


class Prober:
    """Measures every model's ``TaskTerms``; ``samples`` (N x M) training samples per device
    and model, ``weights`` phi_m. ``relative``: each model's phi_m is divided by its loss at
    the first measurement, so that Psi_m counts the share of that loss still left (a warm
    model's last points then weigh as much as a cold model's first ones)."""

    def __init__(
        self,
        trainers: Sequence[ClientTrainer],
        samples: np.ndarray,
        weights: Sequence[float],
        settings: ProbeSettings,
        streams: Streams,
        relative: bool = False,
    ) -> None:
        self.trainers, self.samples, self.weights = list(trainers), samples, list(weights)
        self.settings, self.streams = settings, streams
        self.relative = relative
        self.first_gap: dict[int, float] = {}
        self.peaks: dict[int, float | None] = {}  # the multi-round probe's drift peaks, by model
        self.measurements = 0

    @functools.cached_property
    def _pools(self) -> list[_Pools]:
        return [self._draw(m, tr) for m, tr in enumerate(self.trainers)]

    def _draw(self, m: int, tr: ClientTrainer) -> _Pools:
        s = self.settings
        rng = self.streams.numpy("mafl-probe", tr.task)
        devices = np.flatnonzero(self.samples[:, m] > 0)
        per_device, everything = [], []
        data = tr.indexed
        for n in devices:
            idx = np.arange(len(data.y))[data.client_indices[n]]
            everything.append(idx)
            pick = np.sort(rng.choice(idx, size=min(s.per_device, len(idx)), replace=False))
            per_device.append((data.x[pick], data.y[pick]))
        pool = np.concatenate(everything)
        pick = np.sort(rng.choice(pool, min(s.samples, len(pool)), replace=False))
        ranked = devices[np.argsort(-self.samples[devices, m], kind="stable")]
        chosen = ranked[: s.devices]
        trains = set(chosen.tolist())
        rest = [d for d, n in zip(per_device, devices.tolist(), strict=True) if n not in trains]
        held = None
        if s.held_out and rest:  # only the held-out study scores the round on them
            held = (torch.cat([x for x, _ in rest]), torch.cat([y for _, y in rest]))
        return _Pools(devices, per_device, (data.x[pick], data.y[pick]), chosen, held)

    def __call__(
        self, params: Mapping[int, torch.Tensor], previous: Mapping[int, torch.Tensor | None]
    ) -> tuple[TaskTerms, ...]:
        """Every model's constants at ``params`` (by task id; ``previous``: the model before
        its last aggregation, None before the first)."""
        self.measurements += 1
        out = []
        devices = self.samples.shape[0]
        for m, tr in enumerate(self.trainers):
            pools = self._pools[m]
            rho = self.samples[:, m] / self.samples[:, m].sum()
            current = params[tr.task]
            measured = probe(
                tr.model,
                current,
                previous[tr.task],
                pools.per_device,
                rho[pools.devices],
                lr=tr.spec.lr if self.settings.curved_noise else None,
            )
            chosen = pools.round_devices
            gens = [
                self.streams.torch("mafl-probe-round", m, self.measurements, int(n)) for n in chosen
            ]
            curve = probe_round(
                tr.model,
                current,
                [tr.data(int(n)) for n in chosen],
                rho[chosen],
                pools.evaluation,
                dataclasses.replace(tr.spec, batch_size=self.settings.batch),
                gens,
                held_out=pools.held_out,
            )
            typical = float(np.median(self.samples[pools.devices, m]))
            relative, strays = np.ones(devices), np.zeros(devices)
            relative[pools.devices] = measured.relative_loss
            strays[pools.devices] = measured.relative_dissimilarity
            terms = terms_from(
                measured,
                curve,
                typical,
                self.weights[m],
                relative,
                strays,
                self.settings.local_steps_min,
            )
            if self.settings.sessions > 0:
                if m not in self.peaks:
                    self.peaks[m] = self._replay_peak(m, tr, current)
                peak = self.peaks[m]
                if peak is not None:
                    decay = max(terms.drift_decay, turn_decay(peak, terms.local_steps))
                    terms = dataclasses.replace(terms, drift_decay=decay)
            first = self.first_gap.setdefault(m, max(terms.gap, 1e-6))
            if self.relative:
                terms = dataclasses.replace(terms, weight=terms.weight / first)
            out.append(terms)
        return tuple(out)

    def _replay_peak(self, m: int, tr: ClientTrainer, params: torch.Tensor) -> float | None:
        """The multi-round probe of model ``m`` at ``params``: its drift peak in local steps, or
        None where the replays show none (``sessions.replay_peak``)."""
        pools = self._pools[m]
        rng = self.streams.numpy("mafl-probe-sessions", tr.task)
        order = pools.devices[session_order(len(pools.devices), self.settings.sessions, rng)]
        losses = session_losses(
            tr.model,
            params,
            tr.data,
            order.tolist(),
            pools.evaluation,
            dataclasses.replace(tr.spec, batch_size=self.settings.batch),
            lambda gamma: self.streams.torch("mafl-probe-sessions", tr.task, gamma),
            SESSION_GRID,
            tail=len(pools.devices),
        )
        return replay_peak(SESSION_GRID, losses)

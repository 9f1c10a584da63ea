"""devices config -> a seeded ``Population`` (config at the edge; the maths is in system/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedtempo.data.sources import find_path
from fedtempo.errors import DataError
from fedtempo.experiment.config import ComputeConfig, DevicesConfig, LinkConfig
from fedtempo.rng import Streams
from fedtempo.system import traces
from fedtempo.system.availability import AlwaysOn, Availability, IntervalAvailability
from fedtempo.system.compute import ComputeModel, slowdowns_from_latency
from fedtempo.system.devices import LogNormal
from fedtempo.system.links import ConstantLink, Link, ThroughputTrace, TraceLink, WirelessLink
from fedtempo.system.population import Population


class _Sampler:
    """Draws which trace entry each client gets; records a note when sampling with replacement."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.notes: list[str] = []

    def pick(self, what: str, available: int, clients: int, rng: np.random.Generator) -> np.ndarray:
        if clients <= available:
            return rng.choice(available, size=clients, replace=False)
        if self.strict:
            raise DataError(
                f"{what}: {available} devices for {clients} clients "
                "(set devices.strict = false to sample with replacement)"
            )
        self.notes.append(
            f"{what}: {available} devices for {clients} clients, sampled with replacement"
        )
        return rng.choice(available, size=clients, replace=True)


def _resolve(rel: str, cfg: DevicesConfig) -> Path:
    return find_path(rel, Path(cfg.traces_root) if cfg.traces_root else None)


def _compute(cfg: DevicesConfig, n: int, streams: Streams, sampler: _Sampler) -> ComputeModel:
    c: ComputeConfig = cfg.compute
    rng = streams.numpy("population-compute", 0)
    cv = np.zeros(n)
    if c.source == "lognormal":
        flops = LogNormal(c.median_flops, c.sigma).draw(rng, n)
    elif c.source == "training-latency":
        path = _resolve(c.trace or "traces/devices/training_latency.json", cfg)
        lat = traces.read_training_latency(path, c.model)
        if lat.skipped:
            sampler.notes.append(
                f"{path}: {lat.skipped} of {lat.total} phones have no {c.model} measurement "
                "(missing or 0), skipped"
            )
        pick = sampler.pick(str(path), len(lat.mean_ms), n, rng)
        flops = c.median_flops / slowdowns_from_latency(lat.mean_ms)[pick]
        if c.jitter:
            cv = (lat.std_ms / lat.mean_ms)[pick]
    else:
        path = _resolve(c.trace or "traces/devices/ai_benchmark.json", cfg)
        scores = traces.read_ai_benchmark(path)
        pick = sampler.pick(str(path), len(scores), n, rng)
        flops = c.median_flops * scores[pick] / float(np.median(scores))
    return ComputeModel(np.asarray(flops, dtype=np.float64), cv, streams, c.kappa)


def _link(
    link: LinkConfig,
    direction: int,
    cfg: DevicesConfig,
    n: int,
    streams: Streams,
    sampler: _Sampler,
) -> Link:
    rng = streams.numpy("population-link", direction)
    if link.kind == "lognormal":
        return ConstantLink(LogNormal(link.median_mbps * 1e6, link.sigma).draw(rng, n))
    if link.kind == "trace":
        folder = _resolve(link.trace, cfg)
        loaded = [
            ThroughputTrace.from_samples(*traces.read_throughput(f))
            for f in traces.trace_files(folder)
        ]
        pick = sampler.pick(str(folder), len(loaded), n, rng)
        offsets = rng.uniform(0.0, np.array([t.period for t in loaded])[pick])  # one draw each
        return TraceLink(loaded, pick, offsets, link.scale)
    distance = rng.uniform(link.distance_m[0], link.distance_m[1], n)
    return WirelessLink(
        distance,
        link.power_w,
        link.bandwidth_hz,
        streams,
        link.shadowing_db,
        link.coherence_s,
        link.noise_dbm_hz,
        direction,
    )


def _availability(cfg: DevicesConfig, n: int, streams: Streams, sampler: _Sampler) -> Availability:
    a = cfg.availability
    if a.source == "always":
        return AlwaysOn()
    path = _resolve(a.trace, cfg)
    loaded = traces.read_flash(path)
    rng = streams.numpy("population-availability", 0)
    pick = sampler.pick(str(path), len(loaded), n, rng)
    periods = np.array([span for _, span in loaded])
    offsets = np.array([rng.uniform(0, periods[k]) if a.random_offset else 0.0 for k in pick])
    return IntervalAvailability([iv for iv, _ in loaded], pick, offsets, periods)


def build_population(cfg: DevicesConfig, num_clients: int, streams: Streams) -> Population:
    """The seeded population of ``num_clients`` devices described by ``cfg``."""
    sampler = _Sampler(cfg.strict)
    compute = _compute(cfg, num_clients, streams, sampler)
    uplink = _link(cfg.uplink, 0, cfg, num_clients, streams, sampler)
    downlink = _link(cfg.downlink, 1, cfg, num_clients, streams, sampler)
    power = cfg.uplink.power_w if cfg.uplink.kind == "wireless" else cfg.tx_power_w
    availability = _availability(cfg, num_clients, streams, sampler)
    return Population(
        compute,
        uplink,
        downlink,
        np.full(num_clients, power),
        availability,
        cfg.failure_probability,
        tuple(sampler.notes),
    )

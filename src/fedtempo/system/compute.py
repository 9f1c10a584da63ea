"""Computation time and energy (SPEC section 0)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedtempo.rng import Streams


def computation_energy(kappa: float, flops: float, flops_per_s: float) -> float:
    """E_cmp = (alpha/2) c B gamma f^2 joules, with kappa = alpha/2 (1e-28 typical) and
    flops = c B gamma, counting one FLOP per cycle (f in cycles/s)."""
    return kappa * flops * flops_per_s**2


def transmission_energy(power_w: float, seconds: float) -> float:
    """E_up = p x transmission time, joules."""
    return power_w * seconds


def slowdowns_from_latency(latency_ms: np.ndarray) -> np.ndarray:
    """Each phone's slowdown relative to the median phone (latency / median latency)."""
    return latency_ms / float(np.median(latency_ms))


@dataclass(frozen=True)
class ComputeModel:
    """Per-client speed (FLOP/s) and per-session variability.

    ``cv[n]`` is client n's coefficient of variation (measured std / mean latency): each session's
    time is multiplied by max(0.1, 1 + cv * z), z ~ N(0, 1) drawn from the stream
    ("compute-noise", client, *draw), where ``draw`` names the session (the simulator uses
    (task, dispatch number)), so it is reproducible and the same for every call about the same
    session, whenever it is made.
    """

    flops_per_s: np.ndarray
    cv: np.ndarray
    streams: Streams
    kappa: float = 1e-28

    def time(self, client: int, flops: float, draw: tuple[int, ...] = ()) -> float:
        base = flops / float(self.flops_per_s[client])
        cv = float(self.cv[client])
        if cv <= 0:
            return base
        z = self.streams.numpy("compute-noise", client, *draw).standard_normal()
        return base * max(0.1, 1.0 + cv * z)

    def energy(self, client: int, flops: float) -> float:
        return computation_energy(self.kappa, flops, float(self.flops_per_s[client]))

"""Device profiles and the device model the simulator asks for durations.

A ``DeviceModel`` answers "how long does client n take to compute F FLOPs / send B bits, starting
at virtual time t". Durations may depend on the start time (trace-driven links, later issues).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class DeviceModel(Protocol):
    """Durations in seconds of virtual time for client work starting at ``now``."""

    def compute_time(self, client: int, flops: float, now: float) -> float: ...

    def upload_time(self, client: int, bits: float, now: float) -> float: ...

    def download_time(self, client: int, bits: float, now: float) -> float: ...


@dataclass(frozen=True)
class DeviceProfile:
    """One device: compute speed in FLOP/s, uplink and downlink rates in bit/s."""

    flops_per_s: float
    uplink_bps: float
    downlink_bps: float


@dataclass(frozen=True)
class LogNormal:
    """A positive quantity with the given median and log-space standard deviation sigma."""

    median: float
    sigma: float = 0.0

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        if self.sigma == 0.0:
            return np.full(size, float(self.median))
        return self.median * np.exp(self.sigma * rng.standard_normal(size))


class StaticDevices:
    """Each client has a fixed profile: duration = work / rate."""

    def __init__(self, profiles: list[DeviceProfile]) -> None:
        self.profiles = profiles

    def compute_time(self, client: int, flops: float, now: float) -> float:
        return flops / self.profiles[client].flops_per_s

    def upload_time(self, client: int, bits: float, now: float) -> float:
        return bits / self.profiles[client].uplink_bps

    def download_time(self, client: int, bits: float, now: float) -> float:
        return bits / self.profiles[client].downlink_bps


def draw_profiles(
    num_clients: int,
    rng: np.random.Generator,
    compute: LogNormal,
    uplink: LogNormal,
    downlink: LogNormal,
) -> list[DeviceProfile]:
    """Independent log-normal compute speeds and link rates, one profile per client."""
    f = compute.draw(rng, num_clients)
    up = uplink.draw(rng, num_clients)
    down = downlink.draw(rng, num_clients)
    return [
        DeviceProfile(float(a), float(b), float(c)) for a, b, c in zip(f, up, down, strict=True)
    ]

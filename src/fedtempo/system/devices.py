"""The device model the simulator asks for durations and energy, and a log-normal helper.

A ``DeviceModel`` answers "how long does client n take to compute F FLOPs / send B bits, starting
at virtual time t", what it costs in joules, when the client is available and how often a
session fails. ``fedtempo.system.population.Population`` is the real one;
``fedtempo.testing.ScriptedDevices`` a scripted double.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fedtempo.system.availability import Availability


class DeviceModel(Protocol):
    """Durations in seconds of virtual time for client work starting at ``now``; energy in J."""

    @property
    def availability(self) -> Availability: ...

    @property
    def failure_probability(self) -> float: ...

    def compute_time(
        self, client: int, flops: float, now: float, draw: tuple[int, ...] = ()
    ) -> float:
        """Seconds ``client`` needs for ``flops`` starting at ``now``. ``draw`` names the
        session (the simulator passes (task, dispatch)): calls with the same draw see the same
        per-session variability, so a plan and its session agree."""
        ...

    def upload_time(self, client: int, bits: float, now: float) -> float: ...

    def download_time(self, client: int, bits: float, now: float) -> float: ...

    def compute_energy(self, client: int, flops: float) -> float: ...

    def upload_energy(self, client: int, seconds: float) -> float: ...


@dataclass(frozen=True)
class LogNormal:
    """A positive quantity with the given median and log-space standard deviation sigma."""

    median: float
    sigma: float = 0.0

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        if self.sigma == 0.0:
            return np.full(size, float(self.median))
        return self.median * np.exp(self.sigma * rng.standard_normal(size))

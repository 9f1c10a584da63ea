"""A device population: compute, links, energy, availability and failures composed into the
``DeviceModel`` the simulator asks for durations and energy."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedtempo.system.availability import AlwaysOn, Availability
from fedtempo.system.compute import ComputeModel, transmission_energy
from fedtempo.system.links import Link


@dataclass(frozen=True)
class Population:
    """Everything the simulator needs to know about the devices.

    ``tx_power_w[n]``: client n's transmit power for upload energy. ``notes``: facts the user
    should see (e.g. a trace with fewer devices than clients sampled with replacement).
    """

    compute: ComputeModel
    uplink: Link
    downlink: Link
    tx_power_w: np.ndarray
    availability: Availability = field(default_factory=AlwaysOn)
    failure_probability: float = 0.0
    notes: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return len(self.compute.flops_per_s)

    def compute_time(
        self, client: int, flops: float, now: float, draw: tuple[int, ...] = ()
    ) -> float:
        return self.compute.time(client, flops, draw)

    def upload_time(self, client: int, bits: float, now: float) -> float:
        return self.uplink.transfer_time(client, bits, now)

    def download_time(self, client: int, bits: float, now: float) -> float:
        return self.downlink.transfer_time(client, bits, now)

    def compute_energy(self, client: int, flops: float) -> float:
        return self.compute.energy(client, flops)

    def upload_energy(self, client: int, seconds: float) -> float:
        return transmission_energy(float(self.tx_power_w[client]), seconds)

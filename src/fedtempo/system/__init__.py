"""Devices: compute, links (traces, wireless), energy, availability, failures."""

from fedtempo.system.availability import AlwaysOn, Availability, IntervalAvailability
from fedtempo.system.compute import ComputeModel, computation_energy, transmission_energy
from fedtempo.system.devices import DeviceModel, LogNormal
from fedtempo.system.failures import failure_delay
from fedtempo.system.links import (
    ConstantLink,
    Link,
    ThroughputTrace,
    TraceLink,
    WirelessLink,
    path_loss_db,
    shannon_rate,
)
from fedtempo.system.population import Population

__all__ = [
    "AlwaysOn",
    "Availability",
    "ComputeModel",
    "ConstantLink",
    "DeviceModel",
    "IntervalAvailability",
    "Link",
    "LogNormal",
    "Population",
    "ThroughputTrace",
    "TraceLink",
    "WirelessLink",
    "computation_energy",
    "failure_delay",
    "path_loss_db",
    "shannon_rate",
    "transmission_energy",
]

"""The network driver: a multi-job HTTP service (``fedtempo serve``), the party agent
(``Party``), the durable store, authentication and payload validation. It drives the same
``fedtempo.algorithms`` objects as the simulator and never imports ``fedtempo.sim``."""

from fedtempo.service.auth import Credential
from fedtempo.service.jobs import Blueprint, JobFactory, JobSettings
from fedtempo.service.party import Pace, Party, PartyStats, Trained, WorkTask

__all__ = [
    "Blueprint",
    "Credential",
    "JobFactory",
    "JobSettings",
    "Pace",
    "Party",
    "PartyStats",
    "Trained",
    "WorkTask",
]

"""The network driver: a multi-job HTTP service (``fedtempo serve``), the party agent
(``Party``), the durable store, authentication and payload validation. It drives the same
``fedtempo.algorithms`` objects as the simulator and never imports ``fedtempo.sim``.

Names load on first use, so that ``fedtempo serve`` can start its aggregator workers' template
process before it imports torch itself (``workers.start_template``)."""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "Credential": "auth",
    "Blueprint": "jobs",
    "JobFactory": "jobs",
    "JobSettings": "jobs",
    "Pace": "party",
    "Party": "party",
    "PartyStats": "party",
    "Trained": "party",
    "WorkTask": "party",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'fedtempo.service' has no attribute {name!r}")
    return getattr(importlib.import_module(f"fedtempo.service.{_NAMES[name]}"), name)

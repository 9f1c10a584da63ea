"""Clock-free algorithms: plan a round (who trains what, the phases of each device's work, the
round's allocations) and aggregate what came back. The simulator (``fedtempo.sim``) and the
network service drive the same objects. The MA-FL names load on first use (they need CVXPY)."""

from typing import TYPE_CHECKING, Any

from fedtempo.algorithms.fedavg import FedAvgRounds
from fedtempo.algorithms.jobs import TrainingJob, run_job
from fedtempo.algorithms.protocol import (
    ClientPlan,
    ClientResult,
    Compute,
    Download,
    Exchange,
    ModelState,
    Phase,
    RoundAlgorithm,
    RoundOutcome,
    RoundPlan,
    RoundView,
    Upload,
    WaitUntil,
    Workload,
    standard_phases,
)
from fedtempo.algorithms.pruned import PrunedRounds, PrunedState
from fedtempo.algorithms.splitfed import SplitFedRounds

__all__ = [
    "ClientPlan",
    "ClientResult",
    "Compute",
    "Download",
    "Exchange",
    "FedAvgRounds",
    "MaflRounds",
    "MaflSettings",
    "MaflState",
    "ModelState",
    "Phase",
    "PrunedRounds",
    "PrunedState",
    "RoundAlgorithm",
    "RoundOutcome",
    "RoundPlan",
    "RoundView",
    "SplitFedRounds",
    "TrainingJob",
    "Upload",
    "WaitUntil",
    "Workload",
    "run_job",
    "standard_phases",
]

if TYPE_CHECKING:
    from fedtempo.algorithms.mafl import MaflRounds, MaflSettings, MaflState


def __getattr__(name: str) -> Any:
    if name in ("MaflRounds", "MaflSettings", "MaflState"):
        from fedtempo.algorithms import mafl

        return getattr(mafl, name)
    raise AttributeError(f"module 'fedtempo.algorithms' has no attribute {name!r}")

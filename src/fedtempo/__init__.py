"""fedtempo: federated learning on heterogeneous edge devices, with time as a first-class citizen.

The same algorithm objects (local training, aggregation rules, allocation solvers, round
algorithms) run on a virtual clock (``fedtempo.sim``) and over a real network. Time, randomness
and I/O enter at the edges only.

The front door (names load on first use, so ``import fedtempo`` stays cheap):

- running: ``load_config``, ``run``;
- protocols: ``RoundAlgorithm``, ``RoundView``, ``Executor``, ``Step``, ``StalenessWeight``,
  ``SyncRule``, ``DeviceModel``, ``Availability``, ``Link``;
- round algorithms and their parts: ``FedAvgRounds``, ``PrunedRounds``, ``SplitFedRounds``,
  ``MaflRounds``, ``RoundPlan``, ``ClientPlan``, ``TrainingJob`` and the phases ``Download``,
  ``Compute``, ``Exchange``, ``Upload``, ``WaitUntil``;
- aggregation rules: ``FedAvg``, ``AsyncAggregator`` with ``MixStep``, ``BufferStep``,
  ``DeltaStep`` and the weights ``Constant``, ``Polynomial``, ``Hinge``, ``InverseSqrt``,
  ``Euclidean``;
- local training: ``LocalSpec``, ``Update``, ``train_local``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "load_config": "fedtempo.experiment.api",
    "run": "fedtempo.experiment.api",
    "RoundAlgorithm": "fedtempo.algorithms.protocol",
    "RoundView": "fedtempo.algorithms.protocol",
    "RoundPlan": "fedtempo.algorithms.protocol",
    "ClientPlan": "fedtempo.algorithms.protocol",
    "Download": "fedtempo.algorithms.protocol",
    "Compute": "fedtempo.algorithms.protocol",
    "Exchange": "fedtempo.algorithms.protocol",
    "Upload": "fedtempo.algorithms.protocol",
    "WaitUntil": "fedtempo.algorithms.protocol",
    "TrainingJob": "fedtempo.algorithms.jobs",
    "FedAvgRounds": "fedtempo.algorithms.fedavg",
    "PrunedRounds": "fedtempo.algorithms.pruned",
    "SplitFedRounds": "fedtempo.algorithms.splitfed",
    "MaflRounds": "fedtempo.algorithms.mafl",
    "Executor": "fedtempo.sim.executor",
    "Step": "fedtempo.aggregation.asynchronous",
    "AsyncAggregator": "fedtempo.aggregation.asynchronous",
    "MixStep": "fedtempo.aggregation.asynchronous",
    "BufferStep": "fedtempo.aggregation.asynchronous",
    "DeltaStep": "fedtempo.aggregation.asynchronous",
    "StalenessWeight": "fedtempo.aggregation.staleness",
    "Constant": "fedtempo.aggregation.staleness",
    "Polynomial": "fedtempo.aggregation.staleness",
    "Hinge": "fedtempo.aggregation.staleness",
    "InverseSqrt": "fedtempo.aggregation.staleness",
    "Euclidean": "fedtempo.aggregation.staleness",
    "SyncRule": "fedtempo.aggregation.sync",
    "FedAvg": "fedtempo.aggregation.sync",
    "DeviceModel": "fedtempo.system.devices",
    "Availability": "fedtempo.system.availability",
    "Link": "fedtempo.system.links",
    "LocalSpec": "fedtempo.client.local",
    "Update": "fedtempo.client.local",
    "train_local": "fedtempo.client.local",
}

__all__ = [
    "AsyncAggregator",
    "Availability",
    "BufferStep",
    "ClientPlan",
    "Compute",
    "Constant",
    "DeltaStep",
    "DeviceModel",
    "Download",
    "Euclidean",
    "Exchange",
    "Executor",
    "FedAvg",
    "FedAvgRounds",
    "Hinge",
    "InverseSqrt",
    "Link",
    "LocalSpec",
    "MaflRounds",
    "MixStep",
    "Polynomial",
    "PrunedRounds",
    "RoundAlgorithm",
    "RoundPlan",
    "RoundView",
    "SplitFedRounds",
    "StalenessWeight",
    "Step",
    "SyncRule",
    "TrainingJob",
    "Update",
    "Upload",
    "WaitUntil",
    "__version__",
    "load_config",
    "run",
    "train_local",
]

if TYPE_CHECKING:
    from fedtempo.aggregation.asynchronous import (
        AsyncAggregator,
        BufferStep,
        DeltaStep,
        MixStep,
        Step,
    )
    from fedtempo.aggregation.staleness import (
        Constant,
        Euclidean,
        Hinge,
        InverseSqrt,
        Polynomial,
        StalenessWeight,
    )
    from fedtempo.aggregation.sync import FedAvg, SyncRule
    from fedtempo.algorithms.fedavg import FedAvgRounds
    from fedtempo.algorithms.jobs import TrainingJob
    from fedtempo.algorithms.mafl import MaflRounds
    from fedtempo.algorithms.protocol import (
        ClientPlan,
        Compute,
        Download,
        Exchange,
        RoundAlgorithm,
        RoundPlan,
        RoundView,
        Upload,
        WaitUntil,
    )
    from fedtempo.algorithms.pruned import PrunedRounds
    from fedtempo.algorithms.splitfed import SplitFedRounds
    from fedtempo.client.local import LocalSpec, Update, train_local
    from fedtempo.experiment.api import load_config, run
    from fedtempo.sim.executor import Executor
    from fedtempo.system.availability import Availability
    from fedtempo.system.devices import DeviceModel
    from fedtempo.system.links import Link


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fedtempo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})

"""Pure reducers and the aggregation rules (synchronous and asynchronous, composed)."""

from fedtempo.aggregation.asynchronous import (
    AsyncAggregator,
    AsyncState,
    BufferStep,
    DeltaStep,
    MixStep,
    Outcome,
    adapt_epochs,
    staleness_of,
)
from fedtempo.aggregation.fusion import Buffered, RunningSum
from fedtempo.aggregation.reducers import (
    coefficient_sum,
    coordinate_median,
    sample_weighted_delta,
    step_normalised_delta,
    trimmed_mean,
)
from fedtempo.aggregation.staleness import (
    Constant,
    Euclidean,
    Hinge,
    InverseSqrt,
    Polynomial,
    Staleness,
    StalenessWeight,
)
from fedtempo.aggregation.sync import FedAvg, SyncRule
from fedtempo.aggregation.versions import VersionStore

__all__ = [
    "AsyncAggregator",
    "AsyncState",
    "BufferStep",
    "Buffered",
    "Constant",
    "DeltaStep",
    "Euclidean",
    "FedAvg",
    "Hinge",
    "InverseSqrt",
    "MixStep",
    "Outcome",
    "Polynomial",
    "RunningSum",
    "Staleness",
    "StalenessWeight",
    "SyncRule",
    "VersionStore",
    "adapt_epochs",
    "coefficient_sum",
    "coordinate_median",
    "sample_weighted_delta",
    "staleness_of",
    "step_normalised_delta",
    "trimmed_mean",
]

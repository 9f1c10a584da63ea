"""Pure reducers and aggregation rules."""

from fedtempo.aggregation.reducers import sample_weighted_delta
from fedtempo.aggregation.sync import FedAvg, SyncRule

__all__ = ["FedAvg", "SyncRule", "sample_weighted_delta"]

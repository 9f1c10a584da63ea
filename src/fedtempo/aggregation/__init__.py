"""Pure reducers and aggregation rules."""

from fedtempo.aggregation.reducers import sample_weighted_delta
from fedtempo.aggregation.sync import FedAvg

__all__ = ["FedAvg", "sample_weighted_delta"]

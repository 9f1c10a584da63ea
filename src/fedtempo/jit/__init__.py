"""Just-in-time aggregation for many FL jobs (SPEC section C): the pure policy.

Fusion by the fusers of ``fedtempo.aggregation.fusion`` (running sums are associative, so
partial fusions are exact), per-party arrival
prediction, the trigger time and least-laxity-first ordering. The virtual-clock service that uses
them is ``fedtempo.sim.jit``; a networked service will use the same functions.
"""

from fedtempo.aggregation.fusion import Buffered, RunningSum  # the shared fusers
from fedtempo.jit.policy import (
    ArrivalPredictor,
    Waiting,
    laxity,
    least_laxity_first,
    predicted_quorum,
    trigger_time,
)

__all__ = [
    "ArrivalPredictor",
    "Buffered",
    "RunningSum",
    "Waiting",
    "laxity",
    "least_laxity_first",
    "predicted_quorum",
    "trigger_time",
]

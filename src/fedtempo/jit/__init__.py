"""Just-in-time aggregation for many FL jobs (SPEC section C): the pure policy.

Fusion by running sums (associative, so partial fusions are exact), per-party arrival
prediction, the trigger time and least-laxity-first ordering. The virtual-clock service that uses
them is ``fedtempo.sim.jit``; a networked service will use the same functions.
"""

from fedtempo.jit.fusion import Buffered, RunningSum
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

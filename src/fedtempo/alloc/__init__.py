"""Resource-allocation solvers as pure functions Problem -> Allocation."""

from fedtempo.alloc.pruning import (
    Infeasible,
    PruningAllocation,
    PruningProblem,
    equal_share,
    solve_admitting,
    solve_pruning,
    solve_pruning_slsqp,
)

__all__ = [
    "Infeasible",
    "PruningAllocation",
    "PruningProblem",
    "equal_share",
    "solve_admitting",
    "solve_pruning",
    "solve_pruning_slsqp",
]

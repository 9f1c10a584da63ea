"""Resource-allocation solvers as pure functions Problem -> Allocation."""

from fedtempo.alloc.pruning import Infeasible, PruningAllocation, PruningProblem, solve_pruning

__all__ = ["Infeasible", "PruningAllocation", "PruningProblem", "solve_pruning"]

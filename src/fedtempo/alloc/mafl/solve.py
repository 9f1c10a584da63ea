"""One convex step of the MA-FL solver: Clarabel, SCS where Clarabel fails, and a named error
for an infeasible problem or one neither solver solves."""

from __future__ import annotations

import cvxpy as cp

from fedtempo.alloc.mafl.problem import MaflProblem
from fedtempo.alloc.pruning import Infeasible


class SolverFailed(RuntimeError):
    """Neither Clarabel nor SCS solved a (feasible) convex step."""


def solve_step(problem: cp.Problem, what: str, p: MaflProblem) -> None:
    """Solve with Clarabel (SCS where Clarabel fails numerically or ends without a solution);
    name an infeasible problem."""
    try:
        problem.solve(solver=cp.CLARABEL)
    except cp.error.SolverError:
        problem.solve(solver=cp.SCS)
    else:
        if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE, cp.INFEASIBLE):
            # e.g. "unbounded" on a box-bounded problem: badly scaled data, not the problem
            problem.solve(solver=cp.SCS)
    if problem.status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
        budget = "none" if p.energy_budget is None else f"{p.energy_budget:g} J"
        raise Infeasible(
            f"MA-FL {what}: no schedule meets the constraints (energy budget {budget}, "
            f"at least {p.min_sessions} session(s) per model, {p.channels} channel(s) per round, "
            f"{p.available.shape[1]} round(s))"
        )
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        raise SolverFailed(f"MA-FL {what}: solver ended with status {problem.status}")

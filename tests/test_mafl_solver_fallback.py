"""A horizon on which Clarabel reported "unbounded" for an SCA step of a box-bounded problem
(recorded from W-mafl base, seed 4, B held at 8, gamma up to 100, beta_E 0: the mlp's measured
spread A0 is 0, so its arrival terms are badly scaled). The run stopped there; the step now
falls back to SCS, and a step neither solver solves keeps the best point so far (an SCA step
or a gamma/B block of the sizing alike)."""

from __future__ import annotations

import json
from pathlib import Path

import cvxpy as cp
import numpy as np
import pytest

from fedtempo.alloc.mafl import MaflProblem, plan
from fedtempo.alloc.mafl import sca as sca_module
from fedtempo.alloc.mafl.problem import TaskTerms

RECORDED = Path(__file__).parent / "fixtures" / "mafl_unbounded_step.json"


def recorded_problem() -> MaflProblem:
    raw = json.loads(RECORDED.read_text())

    def value(v: object) -> object:
        return np.array(v) if isinstance(v, list) else v

    terms = tuple(TaskTerms(**{k: value(v) for k, v in t.items()}) for t in raw.pop("terms"))
    fields = {k: value(v) for k, v in raw.items()}
    fields["batch_range"] = tuple(raw["batch_range"])
    return MaflProblem(terms=terms, **fields)  # type: ignore[arg-type]


def check(result: sca_module.Plan, p: MaflProblem) -> None:
    assert np.isfinite(result.objective)
    assert set(np.unique(result.chosen)) <= {0.0, 1.0}
    assert all(b <= a + 1e-9 for a, b in zip(result.relaxed, result.relaxed[1:], strict=False))
    assert all(b <= a + 1e-9 for a, b in zip(result.sizing, result.sizing[1:], strict=False))
    per_model = np.bincount(result.candidates.model[result.chosen > 0.5], minlength=3)
    assert (per_model >= p.min_sessions).all()


def test_the_recorded_horizon_is_planned() -> None:
    p = recorded_problem()
    result = plan(p)
    check(result, p)
    assert result.chosen.sum() > 0
    assert (result.gamma[result.gamma > 0] <= p.max_iterations).all()


def test_a_step_no_solver_solves_keeps_the_best_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every SCA step after the first relaxation fails in both solvers: the plan is the rounded
    first relaxation, with one entry in its history."""
    p = recorded_problem()
    calls = {"n": 0}
    real = cp.Problem.solve

    def solve(self: cp.Problem, *args: object, **kwargs: object) -> object:
        calls["n"] += 1
        out = real(self, *args, **kwargs)
        if calls["n"] > 1 and self.parameters():  # an SCA step (the penalty is a parameter)
            self._status = cp.UNBOUNDED  # what Clarabel reported on this horizon
        return out

    monkeypatch.setattr(cp.Problem, "solve", solve)
    result = plan(p)
    check(result, p)
    assert len(result.relaxed) == 1


def test_a_sizing_block_no_solver_solves_keeps_the_point_so_far(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every gamma/B block fails in both solvers: the plan keeps its starting gamma and B (within
    their bounds), and the sizing's history does not move."""
    p = recorded_problem()
    real = cp.Problem.solve
    failed = {"n": 0}

    def solve(self: cp.Problem, *args: object, **kwargs: object) -> object:
        out = real(self, *args, **kwargs)
        if not self.parameters():  # a sizing block (the S-step's problem has a parameter)
            failed["n"] += 1
            self._status = cp.UNBOUNDED
        return out

    monkeypatch.setattr(cp.Problem, "solve", solve)
    result = plan(p)
    check(result, p)
    assert failed["n"] >= 4  # both blocks, each by Clarabel then SCS
    assert len(set(result.sizing)) == 1
    start = sca_module.starting_iterations(p)
    picked = result.chosen > 0.5
    pairs = result.candidates.device[picked], result.candidates.model[picked]
    assert (result.gamma[pairs] <= start[pairs]).all()
    assert (result.batch[pairs] == p.batch).all()

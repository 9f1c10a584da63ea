"""MA-FL (issue 21): does the surrogate predict what a plan's sessions do to each model's loss?

Runs the optimiser (``sca``, beta_E = 0) on one W-mafl setting and seed. At every plan it takes
each model's constants as the plan used them (G and k: from the learning curve fitted along the
run, or with ``--probe`` from that plan's probe round alone, G then being the loss on the
probe's pooled evaluation sample) and the progress P that the planned sessions uploading in the
plan's first ``step`` rounds give (the surrogate's own P_m, at the plan's gamma and B). It
predicts the loss drop to the next plan, G - G / (1 + k P), and sets it against the drop of the
loss measured there. Figures per model: the predicted and the measured drops summed over the
plans, their ratio, the same two sums from the second plan on, and the range of k.

    python benchmarks/mafl_surrogate_check.py [--setting wide] [--seed 0] [--probe]

Results: benchmarks/results/mafl_surrogate_check[_probe].json.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from typing import Any

import numpy as np
from common import write_results
from w_mafl import SETTINGS


def _planned_progress(scheduler: Any, ctx: Any, schedule: Any, rounds: int) -> np.ndarray:
    """Per model, P_m over the sessions of ``schedule`` that upload in its first ``rounds``."""
    from fedtempo.alloc.mafl.problem import coefficients
    from fedtempo.multitask.optimised import _as_candidates

    p = scheduler.problem(ctx)
    c = _as_candidates(schedule)
    k = coefficients(p, c, schedule.iterations.astype(float), schedule.batch.astype(float))
    models, horizon = len(p.terms), p.available.shape[1]
    slots = models * horizon
    share = np.bincount(k.slot, weights=k.share, minlength=slots).reshape(models, horizon)
    moved = np.bincount(k.slot, weights=k.share * k.steps, minlength=slots)
    per_round = moved.reshape(models, horizon) / (share + k.spread[:, None])
    return np.asarray(per_round[:, :rounds].sum(axis=1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", choices=sorted(SETTINGS), default="wide")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--probe", action="store_true", help="G and k from each probe round alone")
    args = ap.parse_args(argv)
    import torch

    import fedtempo.multitask.optimised as optimised
    from fedtempo.experiment.config import load
    from fedtempo.experiment.results import run_experiment

    torch.set_num_threads(1)
    plans: list[dict[str, Any]] = []
    plan = optimised.SCAScheduler.__call__

    def recording(self: Any, ctx: Any) -> Any:
        schedule = plan(self, ctx)
        progress = _planned_progress(self, ctx, schedule, step)
        used = self.log[-1]  # G and k as the plan used them (calibrated, unless turned off)
        plans.append({"gap": used.gaps, "rate": used.rates, "progress": progress.tolist()})
        plans[-1]["measured"] = [t.gap for t in ctx.terms]
        return schedule

    optimised.SCAScheduler.__call__ = recording  # type: ignore[method-assign]
    overrides = [f"seed={args.seed}", "mafl.scheduler=sca", "mafl.beta_e=0", "executor=inline"]
    overrides.append(f"mafl.calibrate={str(not args.probe).lower()}")
    config = load(SETTINGS[args.setting][0], overrides)
    step = config.mafl.step
    summary, _ = run_experiment(config, None)
    figures: dict[str, float] = {"plans": float(len(plans))}
    for m, task in enumerate(summary["tasks"]):
        name = task["name"]
        predicted = measured = 0.0
        later = [0.0, 0.0]  # from the second plan on (the first has no history to calibrate on)
        rates = [p["rate"][m] for p in plans]
        for i, (a, b) in enumerate(itertools.pairwise(plans)):
            gap, rate, progress = a["gap"][m], a["rate"][m], a["progress"][m]
            guess = gap / (1 + rate * progress)
            predicted += gap - guess
            drop = a["measured"][m] - b["measured"][m]
            measured += drop
            if i > 0:
                later[0] += gap - guess
                later[1] += drop
            print(
                f"{name:17s} loss {a['measured'][m]:.3f} G {gap:.3f} k {rate:.4f} "
                f"P {progress:6.2f}  predicted drop {gap - guess:.3f} measured {drop:.3f}"
            )
        figures[f"{name}_predicted_drop"] = predicted
        figures[f"{name}_measured_drop"] = measured
        figures[f"{name}_predicted_over_measured"] = predicted / measured if measured else -1.0
        figures[f"{name}_predicted_drop_after_first"] = later[0]
        figures[f"{name}_measured_drop_after_first"] = later[1]
        figures[f"{name}_rate_min"], figures[f"{name}_rate_max"] = min(rates), max(rates)
        gaps = [p["measured"][m] for p in plans]
        figures[f"{name}_gap_first"], figures[f"{name}_gap_last"] = gaps[0], gaps[-1]
    for k, v in figures.items():
        print(f"{k:45s} {v:.4f}")
    ratios = [v for k, v in figures.items() if k.endswith("_predicted_over_measured")]
    worst = float(max(ratios))
    targets = {"predicted_within_2x_of_measured": {"value": worst, "met": 0.5 <= worst <= 2.0}}
    name = "MAFL-surrogate-check" + ("-probe" if args.probe else "")
    write_results(name, figures, targets, False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""MA-FL (issue 21): the optimiser's participation term, measured by its weight alone.

In the wide W-mafl setting (configs/w_mafl_wide.toml, 40 devices, C = 10), at beta_E = 0 (the
optimiser's most accurate point), runs SCA with ``mafl.participation`` at each given weight, and
the best baseline (round-robin, gamma 40, B 32), over the given seeds. Per weight (medians over
seeds): the mean accuracy (each task's accuracy over the last 30 virtual seconds, averaged over
tasks), the energy, each task's accuracy, energy and sessions, and how the sessions cover the
devices (devices a task never visited, and the coefficient of variation of the sessions per
device). The question it answers: does a heavier participation term spread the sessions, and
does accuracy follow?

    python benchmarks/mafl_participation.py [--weights 0 1 4 16] [--seeds 0 1 2] [--jobs 2]

Results: benchmarks/results/mafl_participation.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

import numpy as np
from common import write_results
from w_mafl import SETTINGS, run_all


def _summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Medians over seeds of one variant's figures."""
    visits = np.array([r["visits"] for r in rows], dtype=float)  # seeds x tasks x devices
    out = {
        "mean_accuracy": statistics.median(r["accuracy"] for r in rows),
        "energy_j": statistics.median(r["energy"] for r in rows),
        "devices_unvisited": float(np.median((visits == 0).sum(axis=2).mean(axis=1))),
        "sessions_cv": float(np.median((visits.std(axis=2) / visits.mean(axis=2)).mean(axis=1))),
    }
    for m, (name, _, _) in enumerate(rows[0]["tasks"]):
        out[f"{name}_accuracy"] = statistics.median(r["tasks"][m][1] for r in rows)
        out[f"{name}_energy_j"] = statistics.median(r["tasks"][m][2] for r in rows)
        out[f"{name}_sessions"] = float(np.median(visits[:, m, :].sum(axis=1)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 1.0, 4.0, 16.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    config = str(SETTINGS["wide"][0])
    jobs = []
    for seed in args.seeds:
        rr = [f"seed={seed}", "mafl.scheduler=round-robin", "mafl.iterations=40", "mafl.batch=32"]
        jobs.append({"scheduler": "round-robin", "knob": "gamma40-B32", "overrides": rr})
        for w in args.weights:
            over = [f"seed={seed}", "mafl.scheduler=sca", "mafl.beta_e=0"]
            over.append(f"mafl.participation={w}")
            jobs.append({"scheduler": "sca", "knob": f"participation{w:g}", "overrides": over})
    jobs = [j | {"config": config} for j in jobs]
    rows, failed = run_all(jobs, args.jobs)
    figures: dict[str, float] = {"seeds": float(len(args.seeds))}
    for knob in dict.fromkeys(r["knob"] for r in rows):
        for k, v in _summary([r for r in rows if r["knob"] == knob]).items():
            figures[f"{knob}_{k}"] = v
            print(f"{knob:18s} {k:28s} {v:.4f}")
    best = figures["gamma40-B32_mean_accuracy"]
    top = max(figures[f"participation{w:g}_mean_accuracy"] for w in args.weights)
    targets = {"sca_accuracy_at_least_round_robin": {"value": top, "met": top >= best}}
    write_results("MAFL-participation", figures, targets, False)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

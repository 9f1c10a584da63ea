"""W-mafl (BENCHMARKS.md): several models at once, energy versus accuracy.

    python benchmarks/w_mafl.py [--seeds 0] [--jobs 2] [--quick]

Mean accuracy: over the 3 tasks, each task's test accuracy averaged over the last 30 virtual
seconds (the evaluations every 15 s swing by several points from one round's arrivals to the
next); the single last evaluation is kept as ``last_accuracy``. Figures are medians over seeds.

Runs configs/w_mafl.toml under each scheduler: the baselines (synchronous round-robin and
asynchronous random, fixed gamma and B) at gamma in {5, 10, 20, 40} and B in {8, 32} (their
energy-accuracy curve is the Pareto front of these points), the SCA optimiser at several
beta_E. Figures: total energy (J) and mean final accuracy per point; the energy the optimiser
needs to reach the best baseline's mean accuracy (from its curve, linearly interpolated), its
accuracy at the best baseline's energy, and its largest saving at equal accuracy anywhere along
the best baseline front; the SCA objective's monotonicity and the solve time per horizon.
Results: benchmarks/results/w_mafl.json and w_mafl.png.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import itertools
import multiprocessing as mp
import statistics
import sys
from pathlib import Path
from typing import Any

from common import save_plot, tail_mean, write_results

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/w_mafl.toml"


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    from fedtempo.experiment.config import load
    from fedtempo.experiment.results import run_experiment

    torch.set_num_threads(1)
    config = load(CONFIG, job["overrides"])
    summary, result = run_experiment(config, None)
    plans = summary.get("plans", [])
    evaluations = result.recorder.evaluations
    tail = [
        tail_mean([(e.time, e.accuracy) for e in evaluations if e.task == m], result.virtual_time)
        for m in range(len(summary["tasks"]))
    ]
    return {
        **job,
        "accuracy": statistics.fmean(tail),
        "last_accuracy": summary["final_accuracy"],
        "energy": summary["energy_j"],
        "tasks": [
            (t["name"], a, t["energy_j"]) for t, a in zip(summary["tasks"], tail, strict=True)
        ],
        "monotone": all(
            all(b <= a + 1e-9 for a, b in itertools.pairwise(h))
            for p in plans
            for h in (p["relaxed"], p["sizing"])
        ),
        "solve_s": max((p["solve_s"] for p in plans), default=0.0),
    }


def interpolate(points: list[tuple[float, float]], x: float, by: int) -> float | None:
    """Along a curve of (energy, accuracy) sorted by coordinate ``by``, the other coordinate
    at ``x`` (linear; None outside the curve)."""
    pts = sorted(points, key=lambda p: p[by])
    for a, b in itertools.pairwise(pts):
        if a[by] <= x <= b[by] and b[by] > a[by]:
            w = (x - a[by]) / (b[by] - a[by])
            return a[1 - by] + w * (b[1 - by] - a[1 - by])
    exact = [p[1 - by] for p in pts if p[by] == x]
    return exact[0] if exact else None


def front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The Pareto front of (energy, accuracy) points: each kept point is more accurate than
    every cheaper one."""
    out: list[tuple[float, float]] = []
    for p in sorted(points):
        if not out or p[1] > out[-1][1]:
            out.append(p)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    base = ["mafl.rounds=4", "mafl.warmup_rounds=1"] if args.quick else []
    gammas = [10] if args.quick else [5, 10, 20, 40]
    batches = [32] if args.quick else [8, 32]
    betas = [0.0, 0.1] if args.quick else [0.0, 0.003, 0.01, 0.03, 0.1]
    jobs = []
    for seed in args.seeds:
        common = [*base, f"seed={seed}"]
        for sched in ("round-robin", "async-random"):
            for g, b in itertools.product(gammas, batches):
                over = [*common, f"mafl.scheduler={sched}", f"mafl.iterations={g}"]
                over.append(f"mafl.batch={b}")
                knob = f"gamma{g}-B{b}"
                jobs.append({"scheduler": sched, "knob": knob, "seed": seed, "overrides": over})
        for b in betas:
            over = [*common, "mafl.scheduler=sca", f"mafl.beta_e={b}"]
            knob = f"beta{b:g}"
            jobs.append({"scheduler": "sca", "knob": knob, "seed": seed, "overrides": over})
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
        rows = list(pool.map(run_one, jobs))
    report(rows, args.quick)
    return 0


def report(rows: list[dict[str, Any]], quick: bool) -> None:
    figures: dict[str, float] = {}
    curves: dict[str, list[tuple[float, float]]] = {}
    for sched in ("round-robin", "async-random", "sca"):
        for knob in sorted({r["knob"] for r in rows if r["scheduler"] == sched}):
            mine = [r for r in rows if r["scheduler"] == sched and r["knob"] == knob]
            acc = statistics.median(r["accuracy"] for r in mine)
            energy = statistics.median(r["energy"] for r in mine)
            figures[f"{sched}_{knob}_mean_accuracy"] = acc
            figures[f"{sched}_{knob}_energy_j"] = energy
            figures[f"{sched}_{knob}_last_accuracy"] = statistics.median(
                r["last_accuracy"] for r in mine
            )
            curves.setdefault(sched, []).append((energy, acc))
            per_task = [
                (name, statistics.median(r["tasks"][m][1] for r in mine))
                for m, (name, _, _) in enumerate(mine[0]["tasks"])
            ]
            print(
                f"{sched:13s} {knob:>11s}: mean acc {100 * acc:6.2f}%  energy {energy:8.2f} J  "
                + "  ".join(f"{n} {100 * a:.1f}%" for n, a in per_task)
                + f"  ({len(mine)} seed(s))"
            )
    curves = {k: front(v) if k != "sca" else sorted(v) for k, v in curves.items()}
    best = max((p for s in ("round-robin", "async-random") for p in curves[s]), key=lambda p: p[1])
    figures["best_baseline_energy_j"], figures["best_baseline_accuracy"] = best
    # the least energy at which the optimiser's curve reaches the best baseline's accuracy
    crossing = interpolate(curves["sca"], best[1], by=1)
    enough = [e for e, a in curves["sca"] if a >= best[1]]
    enough += [crossing] if crossing is not None else []
    reach = min(enough) if enough else None
    saving = 1 - reach / best[0] if reach is not None else -1.0
    figures["sca_energy_to_best_baseline_accuracy_j"] = -1.0 if reach is None else reach
    at_energy = interpolate(curves["sca"], best[0], by=0)
    figures["sca_accuracy_at_best_baseline_energy"] = -1.0 if at_energy is None else at_energy
    figures["sca_max_accuracy"] = max(a for _, a in curves["sca"])
    # at each optimiser point, the energy the best baseline front needs for that accuracy
    baseline = front([p for s in ("round-robin", "async-random") for p in curves[s]])
    savings = [
        1 - e / need
        for e, a in curves["sca"]
        if (need := interpolate(baseline, a, by=1)) is not None and need > 0
    ]
    figures["sca_best_saving_at_equal_accuracy"] = max(savings) if savings else -1.0
    solve = max(r["solve_s"] for r in rows if r["scheduler"] == "sca")
    figures["sca_max_solve_s_per_horizon"] = solve
    targets = {
        "energy_saving_at_best_baseline_accuracy": {"value": saving, "met": saving >= 0.30},
        "sca_objective_non_increasing": {
            "value": float(all(r["monotone"] for r in rows if r["scheduler"] == "sca")),
            "met": all(r["monotone"] for r in rows if r["scheduler"] == "sca"),
        },
        "solve_under_10s_per_horizon": {"value": solve, "met": solve < 10.0},
    }
    path = write_results("W-mafl", figures, targets, quick)
    plot(curves, quick)
    print("results:", path)
    for name, t in targets.items():
        print(f"target {name}: {t['value']:.3g} -> {'met' if t['met'] else 'NOT met'}")


def plot(curves: dict[str, list[tuple[float, float]]], quick: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for sched, pts in curves.items():
        pts = sorted(pts)
        ax.plot([e for e, _ in pts], [100 * a for _, a in pts], marker="o", label=sched)
    ax.set_xlabel("total energy (J)")
    ax.set_ylabel("mean final accuracy over the 3 tasks (%)")
    ax.set_title("W-mafl: energy versus accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_plot(fig, "w_mafl", quick)


if __name__ == "__main__":
    sys.exit(main())

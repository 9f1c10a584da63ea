"""W-prune (BENCHMARKS.md): pruning and personalization latency, accuracy, KKT vs SLSQP.

Variants (configs/w_prune/): FedAvg, partial personalization without pruning, a fixed pruning
ratio of 0.5 with equal bandwidth, and the KKT optimiser; all on configs/w_prune_base.toml.

    python benchmarks/w_prune.py [--seeds 0 1 2] [--jobs 2] [--quick]

Per run: the per-round latency (the slowest served device's computation + upload), the final
personalized test accuracy (each device's own model on its own test split) and the energy.
The solver comparison takes every round's problem of the KKT runs (the devices it admitted)
plus random instances, and times solve_pruning against SLSQP on the smooth formulation.
Results: benchmarks/results/w_prune.json and w_prune.png.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import report, save_plot

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ["fedavg", "no_pruning", "fixed", "kkt"]
QUICK = [
    "data.dataset=digits",
    "model.name=mlp",
    "partition.num_clients=6",
    "server.clients_per_round=6",
    "server.rounds=3",
    "train.iterations=5",
    "server.pruning.personal_iterations=3",
    "server.pruning.bandwidth_hz=2e5",
    "devices.compute.source=lognormal",
]


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """One variant and seed (in a worker process)."""
    import torch

    from fedtempo.experiment.build import build
    from fedtempo.experiment.config import load
    from fedtempo.sim.recorder import Recorder

    torch.set_num_threads(1)
    overrides = [f"seed={job['seed']}", "threads=1", "executor=inline", *job["extra"]]
    config = load(ROOT / "configs/w_prune" / f"{job['variant']}.toml", overrides)
    built = build(config, Recorder())
    t0 = time.perf_counter()
    result = built.simulation.run()
    assert built.pruned is not None
    log = built.rounds.state.log
    return {
        **job,
        "wall_s": time.perf_counter() - t0,
        "round_latency": [float(np.nanmax(r.latency)) for r in log],
        "threshold": float(log[0].problem.threshold),
        "mean_rho": float(np.mean([np.mean(r.allocation.rho) for r in log])),
        "left_out": sum(len(r.left_out) for r in log),
        "accuracy": result.recorder.evaluations[-1].accuracy,
        "curve": [(e.time, e.accuracy) for e in result.recorder.evaluations],
        "energy_j": sum(e.energy for e in result.recorder.events),
        "problems": [_admitted(r) for r in log] if job["variant"] == "kkt" else [],
    }


def _admitted(r: Any) -> Any:
    from fedtempo.alloc.pruning import subproblem

    keep = [i for i, c in enumerate(r.clients) if c not in r.left_out]
    return subproblem(r.problem, keep)


def random_instance(seed: int, n: int) -> Any:
    """A random feasible Shannon-rate instance of n devices (threshold half the worst)."""
    from fedtempo.alloc.pruning import PruningProblem

    rng = np.random.default_rng(seed)
    t_u, t_v = rng.uniform(0.5, 4.0, n), rng.uniform(0.05, 0.5, n)
    snr = rng.uniform(1e7, 1e10, n)
    bits, total = 6.5e5, 1e7
    full = t_v + t_u + bits / ((total / n) * np.log2(1 + snr / (total / n)))
    return PruningProblem(
        weights=rng.dirichlet(np.ones(n)),
        t_global=t_u,
        t_personal=t_v,
        model_bits=bits,
        threshold=0.5 * float(full.max()),
        bandwidth=total,
        rho_max=0.9,
        rate="shannon",
        snr_per_hz=snr,
    )


def compare_solvers(problems: list[Any]) -> dict[str, float]:
    """Objective gap (KKT - SLSQP) / SLSQP and the time ratio, over problems SLSQP solved."""
    from fedtempo.alloc.pruning import Infeasible, solve_pruning, solve_pruning_slsqp

    gaps, ratios, failed = [], [], 0
    for p in problems:
        try:
            t0 = time.perf_counter()
            for _ in range(5):
                kkt = solve_pruning(p)
            t_kkt = (time.perf_counter() - t0) / 5
        except Infeasible:
            continue
        t0 = time.perf_counter()
        ref, ok = solve_pruning_slsqp(p)
        t_ref = time.perf_counter() - t0
        if not ok:
            failed += 1
            continue
        gaps.append((kkt.objective - ref.objective) / max(abs(ref.objective), 1e-12))
        ratios.append(t_ref / t_kkt)
    return {
        "solver_instances": float(len(gaps)),
        "slsqp_failed": float(failed),
        "kkt_minus_slsqp_rel_max": max(gaps),
        "kkt_minus_slsqp_rel_median": statistics.median(gaps),
        "slsqp_over_kkt_time_median": statistics.median(ratios),
        "slsqp_over_kkt_time_min": min(ratios),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--random", type=int, default=50, help="random solver instances")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    extra = QUICK if args.quick else []
    seeds = args.seeds[:1] if args.quick else args.seeds
    jobs = [{"variant": v, "seed": s, "extra": extra} for s in seeds for v in VARIANTS]
    if args.jobs <= 1:
        rows = [run_one(j) for j in jobs]
    else:
        with cf.ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            rows = list(pool.map(run_one, jobs))
    figures: dict[str, float] = {}
    for v in VARIANTS:
        mine = [r for r in rows if r["variant"] == v]
        figures[f"{v}_round_latency_s"] = statistics.median(
            statistics.median(r["round_latency"]) for r in mine
        )
        figures[f"{v}_accuracy_pct"] = 100 * statistics.median(r["accuracy"] for r in mine)
        figures[f"{v}_energy_j"] = statistics.median(r["energy_j"] for r in mine)
        figures[f"{v}_mean_rho"] = statistics.median(r["mean_rho"] for r in mine)
        figures[f"{v}_left_out_device_rounds"] = statistics.median(r["left_out"] for r in mine)
    figures["threshold_s"] = statistics.median(
        r["threshold"] for r in rows if r["variant"] == "kkt"
    )
    # Paired per seed: KKT against no pruning.
    cuts, gaps = [], []
    for s in seeds:
        kkt = next(r for r in rows if r["variant"] == "kkt" and r["seed"] == s)
        base = next(r for r in rows if r["variant"] == "no_pruning" and r["seed"] == s)
        cuts.append(
            1 - statistics.median(kkt["round_latency"]) / statistics.median(base["round_latency"])
        )
        gaps.append(100 * (kkt["accuracy"] - base["accuracy"]))
    figures["kkt_latency_reduction_vs_no_pruning"] = statistics.median(cuts)
    figures["kkt_accuracy_minus_no_pruning_pts"] = statistics.median(gaps)
    problems = [p for r in rows for p in r["problems"]]
    count = 3 if args.quick else args.random
    problems += [random_instance(1000 + i, 20) for i in range(count)]
    figures.update(compare_solvers(problems))
    targets = {
        "latency reduction >= 50%": {
            "value": figures["kkt_latency_reduction_vs_no_pruning"],
            "met": figures["kkt_latency_reduction_vs_no_pruning"] >= 0.5,
        },
        "accuracy within 1 point": {
            "value": figures["kkt_accuracy_minus_no_pruning_pts"],
            "met": figures["kkt_accuracy_minus_no_pruning_pts"] >= -1.0,
        },
        "KKT no worse than SLSQP by 1e-5 rel": {
            "value": figures["kkt_minus_slsqp_rel_max"],
            "met": figures["kkt_minus_slsqp_rel_max"] <= 1e-5,
        },
        "KKT >= 100x faster (median)": {
            "value": figures["slsqp_over_kkt_time_median"],
            "met": figures["slsqp_over_kkt_time_median"] >= 100,
        },
    }
    plot(rows, seeds[0], args.quick)
    report("W-prune", "W-prune", figures, targets, args.quick)
    return 0


def plot(rows: list[dict[str, Any]], seed: int, quick: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    for v in VARIANTS:
        r = next(r for r in rows if r["variant"] == v and r["seed"] == seed)
        ax1.plot(r["round_latency"], label=v)
        ax2.plot([t for t, _ in r["curve"]], [100 * a for _, a in r["curve"]], label=v)
    ax1.set_xlabel("round")
    ax1.set_ylabel("round latency (s)")
    ax2.set_xlabel("virtual time (s)")
    ax2.set_ylabel("personalized test accuracy (%)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"W-prune (seed {seed})")
    fig.tight_layout()
    save_plot(fig, "w_prune", quick)


if __name__ == "__main__":
    sys.exit(main())

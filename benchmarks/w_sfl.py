"""W-sfl (BENCHMARKS.md): split FL round latency, the optimisers, and accuracy against FedAvg.

Setting (configs/w_sfl.toml): MNIST, 10 devices (Dirichlet 0.5), FLHetBench compute speeds, FCC
bandwidth traces up and down, an edge server with 20x the median device's compute, 50 local
iterations of batch 32 per round. Models: effnetv2-tiny (the default; 7 cut points) and cnn-s
(4 cut points). Because FCC links are slow (about 1 Mbit/s median), the links are also scaled by
x10, x30 and x100 (devices.*.scale) to show where splitting starts to pay.

    python benchmarks/w_sfl.py [--seeds 0 1 2] [--quick]

Figures, per model and link scale (medians over seeds, each seed a different device draw):
the first round's planned round latency of plain FL, one fixed cut (1) for all, equal shares
with optimised cuts, optimised shares with random cuts, the alternating optimiser and the exact
optimum (bisection); the solve times; on 6-device instances, the gap of the alternating and
exact optimisers to the exhaustive optimum; R^2 of the profile fits; and SplitFed training
against FedAvg with the same seed (final accuracy, measured mean round latency).
Results: benchmarks/results/w_sfl.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from common import report

from fedtempo.experiment.config import (
    apply_overrides,
    load,
    read_layers,
    validate,
    with_algorithm,
)
from fedtempo.experiment.plan import plan_sfl
from fedtempo.experiment.results import run_experiment
from fedtempo.models import build_model
from fedtempo.split import fit_curve, profile_cuts, splittable

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "w_sfl.toml"
MODELS = ("effnetv2-tiny", "cnn-s")
SMALL = 6  # devices in the instances solved exhaustively (7^6 cut combinations)
POLICIES = {
    "plain FL": "plain",
    "fixed cut 1": "fixed1",
    "equal shares": "equal",
    "random cuts": "random",
    "alternating": "alternating",
    "optimal": "optimal",
    "exhaustive": "exhaustive",
}


def fits(figures: dict[str, float]) -> None:
    for name in MODELS:
        model = splittable(name, build_model(name, (1, 28, 28), 10, torch.Generator()))
        prof = profile_cuts(model, (1, 28, 28))
        # smashed bits: fitted over the split cuts only (at l = L nothing crosses)
        series = {
            "client_flops": (prof.cuts, prof.client_flops),
            "smashed_bits": (prof.cuts[:-1], prof.smashed_bits[:-1]),
            "client_bits": (prof.cuts, prof.client_bits),
        }
        for qty, (x, y) in series.items():
            for family in ("poly", "exp", "spline"):
                figures[f"{name}_r2_{qty}_{family}"] = fit_curve(x, y, family).r2


def plans(
    name: str, scale: float, seed: int, clients: int, limit: int
) -> dict[str, tuple[float, float]]:
    """policy -> (round latency, solve seconds) for the first round."""
    sets = [
        f"seed={seed}",
        f"model.name={name}",
        f"server.clients_per_round={clients}",
        f"partition.num_clients={max(clients, 10)}",
        f"devices.uplink.scale={scale}",
        f"devices.downlink.scale={scale}",
    ]
    plan = plan_sfl(load(CONFIG, sets), max_combinations=limit)
    return {POLICIES[k]: (alloc.round_latency, secs) for k, (alloc, secs) in plan.policies.items()}


def latency_study(
    figures: dict[str, float], targets: dict[str, Any], scales: list[float], seeds: list[int]
) -> None:
    for name in MODELS:
        for scale in scales:
            runs = [plans(name, scale, s, 10, 1) for s in seeds]  # no exhaustive at 10 devices
            tag = f"{name}_x{scale:g}"
            for pol in runs[0]:
                figures[f"{tag}_{pol}_latency_s"] = statistics.median(r[pol][0] for r in runs)
                figures[f"{tag}_{pol}_solve_ms"] = 1e3 * statistics.median(r[pol][1] for r in runs)
            plain = figures[f"{tag}_plain_latency_s"]
            for pol in ("optimal", "alternating"):
                figures[f"{tag}_{pol}_reduction_vs_plain"] = (
                    1 - figures[f"{tag}_{pol}_latency_s"] / plain
                )
            figures[f"{tag}_alternating_gap_to_optimal"] = statistics.median(
                r["alternating"][0] / r["optimal"][0] - 1 for r in runs
            )
    default = figures["effnetv2-tiny_x1_optimal_reduction_vs_plain"]
    targets[
        "default setting (effnetv2-tiny, FCC links): >= 30% lower round latency than plain FL"
    ] = {
        "value": default,
        "met": default >= 0.3,
    }


def small_instances(
    figures: dict[str, float], targets: dict[str, Any], scales: list[float], seeds: list[int]
) -> None:
    gaps: dict[str, list[float]] = {"alternating": [], "optimal": []}
    ex_ms = []
    for scale in scales:
        for seed in seeds:
            r = plans("effnetv2-tiny", scale, seed, SMALL, 200_000)
            for pol in gaps:
                gaps[pol].append(r[pol][0] / r["exhaustive"][0] - 1)
            ex_ms.append(1e3 * r["exhaustive"][1])
    for pol, g in gaps.items():
        figures[f"small_{pol}_gap_to_exhaustive_max"] = max(g)
        figures[f"small_{pol}_gap_to_exhaustive_median"] = statistics.median(g)
    figures["small_exhaustive_solve_ms_median"] = statistics.median(ex_ms)
    worst = figures["small_alternating_gap_to_exhaustive_max"]
    targets[f"alternating within 1% of the exhaustive optimum ({SMALL} devices, every scale)"] = {
        "value": worst,
        "met": worst <= 0.01,
    }


def accuracy(
    figures: dict[str, float], targets: dict[str, Any], quick: bool, seeds: list[int]
) -> None:
    """SplitFed (optimal plan, links x100 so that devices do split) against FedAvg, same seed."""
    settings = {
        "cnn-s": ["server.rounds=2", "train.iterations=5"] if quick else ["server.rounds=20"]
    }
    if not quick:  # effnetv2-tiny trains at about 120 samples/s here: a short run
        settings["effnetv2-tiny"] = ["server.rounds=3", "train.iterations=10"]
    diffs = []
    for name, extra in settings.items():
        for seed in seeds[:1] if name == "effnetv2-tiny" else seeds:
            base = [
                f"seed={seed}",
                f"model.name={name}",
                "devices.uplink.scale=100",
                "devices.downlink.scale=100",
                *extra,
            ]
            out = {}
            for algo in ("splitfed", "fedavg"):
                t0 = time.perf_counter()
                data = apply_overrides(with_algorithm(read_layers(CONFIG), algo), base)
                summary, _ = run_experiment(validate(data, f"{CONFIG} as {algo}"), None)
                rounds = int(extra[0].split("=")[1])
                out[algo] = (summary["final_accuracy"], summary["virtual_time_s"] / rounds)
                figures[f"{name}_seed{seed}_{algo}_wall_s"] = time.perf_counter() - t0
            for algo, (acc, lat) in out.items():
                figures[f"{name}_seed{seed}_{algo}_final_accuracy"] = acc
                figures[f"{name}_seed{seed}_{algo}_mean_round_s"] = lat
            diffs.append(abs(out["splitfed"][0] - out["fedavg"][0]))
    figures["accuracy_max_abs_diff_points"] = 100 * max(diffs)
    targets["SplitFed accuracy within 0.3 points of FedAvg (same seed)"] = {
        "value": 100 * max(diffs),
        "met": 100 * max(diffs) <= 0.3,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    seeds = args.seeds[:1] if args.quick else args.seeds
    scales = [1.0, 100.0] if args.quick else [1.0, 10.0, 30.0, 100.0]
    figures: dict[str, float] = {}
    targets: dict[str, Any] = {}
    fits(figures)
    latency_study(figures, targets, scales, seeds)
    small_instances(figures, targets, scales[-1:] if args.quick else scales, seeds)
    accuracy(figures, targets, args.quick, seeds)
    report("W-sfl", "W-sfl", figures, targets, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())

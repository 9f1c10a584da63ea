"""W-sim (BENCHMARKS.md): the cost of the framework itself.

MNIST, 100 clients, Dirichlet 0.5 seed 0, cnn-s; 1 local epoch, batch 32, SGD lr 0.05; sync
FedAvg, 10 clients per round, 50 rounds; one evaluation at the end. Runs the same work as a plain
PyTorch loop and through fedtempo, alternately in one process, and reports medians and ratios.

    python benchmarks/w_sim.py [--quick] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import peak_memory_mb, write_results
from rich.console import Console
from rich.table import Table

from fedtempo.data.datasets import load_idx_pair
from fedtempo.data.partition import dirichlet
from fedtempo.experiment.config import load
from fedtempo.experiment.results import run_experiment
from fedtempo.models import build_model

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "w_sim.toml"


def plain_loop(rounds: int, per_round: int, threads: int) -> tuple[float, float]:
    """W-sim without a framework: returns (wall seconds incl. data loading, test accuracy)."""
    t0 = time.perf_counter()
    torch.set_num_threads(threads)
    data = load_idx_pair("mnist")
    parts = dirichlet(data.train.y.numpy(), 100, 0.5, 0)
    rng = np.random.default_rng(0)
    model = build_model("cnn-s", (1, 28, 28), 10, torch.Generator().manual_seed(0))
    global_vec = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(rounds):
        acc = torch.zeros_like(global_vec)
        chosen = rng.choice(100, size=per_round, replace=False)
        total = sum(len(parts[c]) for c in chosen)
        for c in chosen:
            torch.nn.utils.vector_to_parameters(global_vec.clone(), model.parameters())
            opt = torch.optim.SGD(model.parameters(), lr=0.05)
            idx = torch.from_numpy(parts[c])
            x, y = data.train.x[idx], data.train.y[idx]
            for b in torch.randperm(len(idx)).split(32):
                opt.zero_grad()
                loss_fn(model(x[b]), y[b]).backward()
                opt.step()
            local = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
            acc += local * (len(idx) / total)
        global_vec = acc
    torch.nn.utils.vector_to_parameters(global_vec, model.parameters())
    with torch.no_grad():
        pred = model(data.test.x).argmax(1)
    accuracy = float((pred == data.test.y).float().mean())
    return time.perf_counter() - t0, accuracy


def fedtempo_run(rounds: int, per_round: int, threads: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    config = load(
        CONFIG,
        [f"server.rounds={rounds}", f"server.clients_per_round={per_round}", f"threads={threads}"],
    )
    summary, _ = run_experiment(config, None)
    return time.perf_counter() - t0, float(summary["final_accuracy"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 rounds x 2 clients, 1 repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    rounds, per_round, repeats = (2, 2, 1) if args.quick else (50, 10, args.repeats)
    plain, ours, accs = [], [], []
    for _ in range(repeats):
        w, _acc = plain_loop(rounds, per_round, args.threads)
        plain.append(w)
        w, acc = fedtempo_run(rounds, per_round, args.threads)
        ours.append(w)
        accs.append(acc)
    plain_s, ours_s = statistics.median(plain), statistics.median(ours)
    overhead = ours_s / plain_s - 1.0
    updates = rounds * per_round
    figures = {
        "wall_seconds": ours_s,
        "plain_loop_seconds": plain_s,
        "framework_overhead": overhead,
        "client_updates_per_second": updates / ours_s,
        "peak_memory_mb": peak_memory_mb(),
        "final_accuracy": statistics.median(accs),
    }
    targets = {
        "framework_overhead": {"value": overhead, "met": overhead < 0.10},
        "wall_seconds": {"value": ours_s, "met": ours_s < 16.0},
        "peak_memory_mb": {"value": figures["peak_memory_mb"], "met": peak_memory_mb() < 1024},
    }
    table = Table(title=f"W-sim ({'quick' if args.quick else 'full'}, {args.threads} thread(s))")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for k, v in figures.items():
        table.add_row(k, f"{v:.4g}")
    Console().print(table)
    print(
        "per-repeat plain:", [round(x, 2) for x in plain], "fedtempo:", [round(x, 2) for x in ours]
    )
    print("results:", write_results("W-sim", figures, targets, args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())

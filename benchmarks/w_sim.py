"""W-sim (BENCHMARKS.md): the cost of the framework itself.

MNIST, 100 clients, Dirichlet 0.5 seed 0, cnn-s; 1 local epoch, batch 32, SGD lr 0.05; sync
FedAvg, 10 clients per round, 50 rounds; one evaluation at the end (configs/w_sim.toml), and the
async variant (FedBuff, buffer 10, concurrency 10, 500 updates: configs/w_sim_fedbuff.toml).
Every variant runs as its own process, timed start to exit like the BENCHMARKS.md reference
points, interleaved with the plain PyTorch loop (benchmarks/plain_wsim.py); medians of
``--repeats``. Peak memory is each process's own (wait4), the largest over the variants.

    python benchmarks/w_sim.py [--quick] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import report

BENCH = Path(__file__).resolve().parent
CONFIGS = BENCH.parent / "configs"


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """Run ``cmd``; (wall seconds, peak RSS in MB of the process, stdout)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise RuntimeError(f"{cmd} failed with status {status}")
    return wall, usage.ru_maxrss / 1024.0, out


def plain_loop(rounds: int, per_round: int, threads: int) -> tuple[float, float, float]:
    wall, rss, out = timed(
        [sys.executable, str(BENCH / "plain_wsim.py"), str(rounds), str(per_round), str(threads)]
    )
    return wall, rss, float(json.loads(out)["accuracy"])


def fedtempo_run(config: str, overrides: list[str]) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "fedtempo.cli", "run", str(CONFIGS / config), "--out", out]
        for o in overrides:
            cmd += ["--set", o]
        wall, rss, _ = timed(cmd)
        summary = json.loads((Path(out) / "summary.json").read_text())
    return wall, rss, float(summary["final_accuracy"])


VARIANTS = {
    # name: (config, overrides)
    "sync_inline_1t": ("w_sim.toml", ["threads=1", "executor=inline"]),
    "sync_process_2w": ("w_sim.toml", ["executor=process", "workers=2"]),
    "async_inline_1t": ("w_sim_fedbuff.toml", ["threads=1", "executor=inline"]),
    "async_process_2w": ("w_sim_fedbuff.toml", ["executor=process", "workers=2"]),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 rounds x 2 clients, 1 repeat")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    rounds, per_round, repeats = (2, 2, 1) if args.quick else (50, 10, args.repeats)
    sizes = {  # each variant's own [server] keys
        "w_sim.toml": [f"server.rounds={rounds}", f"server.clients_per_round={per_round}"],
        "w_sim_fedbuff.toml": [f"server.max_updates={rounds * per_round}"],
    }
    if args.quick:
        sizes["w_sim_fedbuff.toml"].append("server.fedbuff.buffer_size=2")
    walls: dict[str, list[float]] = {"plain_1t": []}
    accs: dict[str, list[float]] = {"plain_1t": []}
    peaks: dict[str, float] = {}
    for _ in range(repeats):  # interleaved, so that machine noise hits every variant alike
        w, rss, a = plain_loop(rounds, per_round, 1)
        walls["plain_1t"].append(w)
        accs["plain_1t"].append(a)
        peaks["plain_1t"] = max(peaks.get("plain_1t", 0.0), rss)
        for name, (cfg, extra) in VARIANTS.items():
            w, rss, a = fedtempo_run(cfg, [*sizes[cfg], *extra])
            walls.setdefault(name, []).append(w)
            accs.setdefault(name, []).append(a)
            peaks[name] = max(peaks.get(name, 0.0), rss)
    med = {k: statistics.median(v) for k, v in walls.items()}
    plain = med["plain_1t"]
    updates = rounds * per_round
    figures: dict[str, float] = {}
    for k in walls:
        figures[f"{k}_seconds"] = med[k]
        figures[f"{k}_accuracy"] = statistics.median(accs[k])
        figures[f"{k}_updates_per_second"] = updates / med[k]
    figures["framework_overhead"] = med["sync_inline_1t"] / plain - 1.0
    figures["async_framework_overhead"] = med["async_inline_1t"] / plain - 1.0
    figures["parallel_speedup_vs_plain_1t"] = plain / med["sync_process_2w"]
    figures["async_parallel_speedup_vs_plain_1t"] = plain / med["async_process_2w"]
    for k, v in peaks.items():
        figures[f"{k}_peak_memory_mb"] = v
    figures["peak_memory_mb"] = max(v for k, v in peaks.items() if k != "plain_1t")
    targets = {
        "framework_overhead": {
            "value": figures["framework_overhead"],
            "met": figures["framework_overhead"] < 0.10,
        },
        "async_framework_overhead": {
            "value": figures["async_framework_overhead"],
            "met": figures["async_framework_overhead"] < 0.10,
        },
        "parallel_speedup_vs_plain_1t": {
            "value": figures["parallel_speedup_vs_plain_1t"],
            "met": figures["parallel_speedup_vs_plain_1t"] >= 1.6,
        },
        "async_parallel_speedup_vs_plain_1t": {
            "value": figures["async_parallel_speedup_vs_plain_1t"],
            "met": figures["async_parallel_speedup_vs_plain_1t"] >= 1.6,
        },
        "peak_memory_mb": {
            "value": figures["peak_memory_mb"],
            "met": figures["peak_memory_mb"] < 1024,
        },
    }
    report(
        f"W-sim ({'quick' if args.quick else 'full'}), medians of {repeats}",
        "W-sim",
        figures,
        targets,
        args.quick,
    )
    for k, v in walls.items():
        print(k, [round(x, 2) for x in v])
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""W-sim (BENCHMARKS.md): the cost of the framework itself.

MNIST, 100 clients, Dirichlet 0.5 seed 0, cnn-s; 1 local epoch, batch 32, SGD lr 0.05; sync
FedAvg, 10 clients per round, 50 rounds; one evaluation at the end (configs/w_sim.toml), and the
async variant (FedBuff, buffer 10, concurrency 10, 500 updates: configs/w_sim_fedbuff.toml).
Every variant runs as its own process, timed start to exit like the BENCHMARKS.md reference
points, interleaved with the plain PyTorch loop (benchmarks/plain_wsim.py); medians of
``--repeats``. Peak memory is each process's own (wait4), the largest over the variants.

    python benchmarks/w_sim.py [--quick] [--repeats 3] [--peer flower]

``--peer flower`` also runs the same workload in Flower's simulation engine (a Flower app in
benchmarks/peers/, installed into its own environment by benchmarks/peers/setup_flower.sh on
first use; skipped, with the reason, where it cannot be installed) in the same interleaved
loop, and measures every run's memory over all its processes together (sampled every 0.2 s):
fedtempo's speed-up over Flower end to end and Flower's memory over fedtempo's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from common import report
from peer_flower import flower_run, timed_tree

BENCH = Path(__file__).resolve().parent
CONFIGS = BENCH.parent / "configs"


# per variant: peak MB of all its processes together, as the sum of their resident sets (a page
# shared by k processes counts k times) and of their proportional sets (it counts once)
TREES: dict[str, float] = {}
TREES_PSS: dict[str, float] = {}


def _tree(name: str, tree: tuple[float, float]) -> None:
    TREES[name] = max(TREES.get(name, 0.0), tree[0])
    TREES_PSS[name] = max(TREES_PSS.get(name, 0.0), tree[1])


def plain_loop(rounds: int, per_round: int, threads: int) -> tuple[float, float, float]:
    cmd = [sys.executable, str(BENCH / "plain_wsim.py"), str(rounds), str(per_round), str(threads)]
    wall, rss, tree, out = timed_tree(cmd)
    _tree("plain_1t", tree)
    return wall, rss, float(json.loads(out)["accuracy"])


def fedtempo_run(name: str, config: str, overrides: list[str]) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "fedtempo.cli", "run", str(CONFIGS / config), "--out", out]
        for o in overrides:
            cmd += ["--set", o]
        wall, rss, tree, _ = timed_tree(cmd)
        _tree(name, tree)
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
    ap.add_argument("--peer", choices=["flower"], default=None)
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
    peer = _peer_setup(args.peer, Path(tempfile.mkdtemp()))
    for _ in range(repeats):  # interleaved, so that machine noise hits every variant alike
        w, rss, a = plain_loop(rounds, per_round, 1)
        walls["plain_1t"].append(w)
        accs["plain_1t"].append(a)
        peaks["plain_1t"] = max(peaks.get("plain_1t", 0.0), rss)
        for name, (cfg, extra) in VARIANTS.items():
            w, rss, a = fedtempo_run(name, cfg, [*sizes[cfg], *extra])
            walls.setdefault(name, []).append(w)
            accs.setdefault(name, []).append(a)
            peaks[name] = max(peaks.get(name, 0.0), rss)
        if peer is not None:
            w, tree, a = flower_run(*peer, rounds, per_round)
            walls.setdefault("flower", []).append(w)
            accs.setdefault("flower", []).append(a)
            _tree("flower", tree)
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
    for k, mb in TREES.items():
        figures[f"{k}_all_processes_peak_memory_mb"] = mb
        figures[f"{k}_all_processes_peak_pss_mb"] = TREES_PSS[k]
    if peer is not None:
        figures["flower_vs_plain_1t"] = med["flower"] / plain
        for variant in ("sync_process_2w", "async_process_2w"):
            figures[f"{variant}_speedup_vs_flower"] = med["flower"] / med[variant]
            figures[f"flower_memory_over_{variant}"] = TREES["flower"] / TREES[variant]
            pss = TREES_PSS["flower"] / TREES_PSS[variant]
            figures[f"flower_pss_over_{variant}"] = pss
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
            "met": figures["parallel_speedup_vs_plain_1t"] >= 1.8,
        },
        "async_parallel_speedup_vs_plain_1t": {
            "value": figures["async_parallel_speedup_vs_plain_1t"],
            "met": figures["async_parallel_speedup_vs_plain_1t"] >= 1.8,
        },
        "peak_memory_mb": {
            "value": figures["peak_memory_mb"],
            "met": figures["peak_memory_mb"] < 1024,
        },
    }
    if peer is not None:
        speed = figures["sync_process_2w_speedup_vs_flower"]
        memory = figures["flower_memory_over_sync_process_2w"]
        targets["speedup_vs_flower"] = {"value": speed, "met": speed >= 2.4}
        targets["flower_memory_over_fedtempo"] = {"value": memory, "met": memory >= 2.0}
        pss = figures["flower_pss_over_sync_process_2w"]  # shared pages counted once
        targets["flower_pss_over_fedtempo"] = {"value": pss, "met": pss >= 2.0}
    report(
        f"W-sim ({'quick' if args.quick else 'full'}), medians of {repeats}",
        "W-sim",
        figures,
        targets,
        args.quick,
    )
    for k, times in walls.items():
        print(k, [round(x, 2) for x in times])
    return 0


def _peer_setup(peer: str | None, tmp: Path) -> tuple[Path, Path] | None:
    """(Flower's python, the partition file), or None (no peer, or Flower not installable)."""
    if peer is None:
        return None
    from peer_flower import flower_python, write_partition  # fedtempo's data: only for a peer

    python, why = flower_python()
    if python is None:
        print(f"--peer flower skipped: {why}")
        return None
    partition = tmp / "partition.npz"
    write_partition(partition)
    return python, partition


if __name__ == "__main__":
    sys.exit(main())

"""W-jit (BENCHMARKS.md): many FL jobs, aggregator resources: eager vs lazy vs JIT.

20 jobs x 50 parties, 20 rounds each, quorum 35 of 50 (70%); 30% of the parties intermittent
(FLASH ready windows: a party starts when its window opens and must finish inside it, else it
retries in the next), the rest always on; compute from the FLHetBench phone latencies, links from
the FCC throughput traces. Models of 100 KB and 50 MB (run separately); pool C in {20, 10, 5}.
Deploy time = the measured cold start of a fresh Python process importing torch and fedtempo;
fusion time per update = the measured time to fold one update of that size into a float64
running sum, on this machine.

Two further variants per size and C:
- "bound": FedAvg with the store's queue bounded (10 updates; 3 in --quick): partial fusions
  trade aggregator-seconds for store memory (``store_peak``, in updates);
- "buffer": a rule that needs every update (coordinate median); its fusion time per update is the
  measured median of a quorum of updates of that size, divided by the quorum.

    python benchmarks/w_jit.py [--seeds 0 1 2] [--quick]

Figures per size and C: aggregator-seconds saved by JIT (and lazy) versus eager, the median and
p95 aggregation latency, the median round and job completion times, the median |prediction
error|, the store's peak queue. Results: benchmarks/results/w_jit.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np
import simpy
import torch
from common import report

from fedtempo.experiment.config import DevicesConfig, validate
from fedtempo.experiment.population import build_population
from fedtempo.jit import Buffered, RunningSum
from fedtempo.rng import Streams
from fedtempo.sim.jit import AggregationService, JitSettings, Job
from fedtempo.system.population import Population

SIZES = {"100KB": 100_000, "50MB": 50_000_000}
ROUND_FLOPS = 3e10  # a party's local training per round (~15 s on the median phone)


def measure_fusion(nbytes: int, repeats: int = 5) -> float:
    """Seconds to fold one float32 update of ``nbytes`` into a running sum (median)."""
    vec = torch.randn(nbytes // 4)
    acc = RunningSum()
    acc.add(vec, 1.0)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        acc.add(vec, 1.0)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_buffered(nbytes: int, quorum: int) -> float:
    """Seconds per update of a coordinate median over ``quorum`` float32 updates of ``nbytes``."""
    gen = torch.Generator().manual_seed(0)
    med = Buffered("median")
    for _ in range(quorum):
        med.add(torch.randn(nbytes // 4, generator=gen), 1.0)
    t0 = time.perf_counter()
    med.result()
    return (time.perf_counter() - t0) / quorum


def measure_deploy(repeats: int = 3) -> float:
    """Cold start of an aggregator: a fresh interpreter importing torch and fedtempo (median)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch, fedtempo.jit"], check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def population(parties: int, seed: int) -> tuple[Population, np.ndarray]:
    cfg: DevicesConfig = validate(
        {
            "devices": {
                "compute": {"source": "training-latency"},
                "uplink": {"kind": "trace", "trace": "traces/bandwidth/fcc"},
                "downlink": {"kind": "trace", "trace": "traces/bandwidth/fcc"},
                "availability": {"source": "flash"},
            }
        }
    ).devices
    streams = Streams(seed)
    pop = build_population(cfg, parties, streams)
    intermittent = streams.numpy("intermittent", 0).random(parties) < 0.3
    return pop, intermittent


class Parties:
    """Arrival times of every job's parties from the device population."""

    def __init__(self, pop: Population, intermittent: np.ndarray, per_job: int, bits: float):
        self.pop, self.intermittent, self.per_job, self.bits = pop, intermittent, per_job, bits

    def duration(self, c: int, start: float, draw: tuple[int, ...]) -> float:
        """A session of party c from ``start``; ``draw`` names it (its compute noise)."""
        p = self.pop
        down = p.download_time(c, self.bits, start)
        comp = p.compute_time(c, ROUND_FLOPS, start + down, draw)
        return down + comp + p.upload_time(c, self.bits, start + down + comp)

    def ready(self, c: int, t: float) -> float:
        if not self.intermittent[c]:
            return t
        return self.pop.availability.next_start(c, t)

    def arrival(self, job: int, party: int, round_: int, t0: float) -> float:
        c = job * self.per_job + party
        start = self.ready(c, t0)
        for attempt in range(100):  # windows tried before giving up on the round
            if not math.isfinite(start):
                return math.inf
            d = self.duration(c, start, (job, round_, attempt))
            if not self.intermittent[c]:
                return start + d
            end = self.pop.availability.window_end(c, start)
            if end is not None and start + d < end:
                return start + d
            start = self.pop.availability.next_start(c, end if end is not None else start + 1.0)
        return math.inf


def simulate(
    policy: str, pool: int, parties: Parties, jobs: list[Job], settings: JitSettings
) -> dict[str, float]:
    env = simpy.Environment()
    svc = AggregationService(
        env,
        jobs,
        parties.arrival,
        policy=policy,  # type: ignore[arg-type]
        pool=pool,
        ready=lambda job, party, t: parties.ready(job * parties.per_job + party, t),
        settings=settings,
    )
    env.run(until=env.all_of(svc.start()))
    svc.close()
    ms = list(svc.metrics.values())
    lat = [x for m in ms for x in m.latency]
    rounds = [x for m in ms for x in m.round_s]
    err = [abs(x) for m in ms for x in m.prediction_error]
    return {
        "aggregator_s": sum(m.aggregator_s for m in ms),
        "latency_median": statistics.median(lat),
        "latency_p95": float(np.percentile(lat, 95)),
        "round_median": statistics.median(rounds),
        "job_completion_median": statistics.median(m.finish for m in ms),
        "prediction_error_median": statistics.median(err) if err else 0.0,
        "fallbacks": float(sum(m.fallbacks for m in ms)),
        "store_peak": float(max(m.store_peak for m in ms)),
        "partial_fusions": float(sum(m.partial_fusions for m in ms)),
    }


def make_jobs(
    parties: Parties,
    count: int,
    per_job: int,
    rounds: int,
    deploy: float,
    fuse: float,
    fusion: str = "sum",
) -> list[Job]:
    jobs = []
    for j in range(count):
        profile = np.array(
            [parties.duration(j * per_job + p, 0.0, (j, 0, 0)) for p in range(per_job)],
            dtype=np.float64,
        )
        quorum = int(0.7 * per_job)
        jobs.append(Job(j, per_job, rounds, quorum, deploy, fuse, profile, fusion))  # type: ignore[arg-type]
    return jobs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    count, per_job, rounds = (4, 10, 3) if args.quick else (20, 50, 20)
    quorum = int(0.7 * per_job)
    pools = [4, 2] if args.quick else [20, 10, 5]
    seeds = args.seeds[:1] if args.quick else args.seeds
    deploy = measure_deploy(1 if args.quick else 3)
    figures: dict[str, float] = {"deploy_s": deploy}
    targets: dict[str, dict[str, Any]] = {}
    settings = JitSettings(safety_sd=1.0, alpha=0.3, margin_s=deploy, grace_s=120.0)
    bounded = dataclasses.replace(settings, queue_bound=3 if args.quick else 10)
    # variant -> (fusion rule, settings, policies)
    variants = {
        "sum": ("sum", settings, ("eager", "lazy", "jit")),
        "bound": ("sum", bounded, ("lazy", "jit")),
        "buffer": ("buffer", settings, ("eager", "lazy", "jit")),
    }
    for size, nbytes in SIZES.items():
        fuse = {"sum": measure_fusion(nbytes), "buffer": measure_buffered(nbytes, quorum)}
        figures[f"{size}_fuse_s_per_update"] = fuse["sum"]
        figures[f"{size}_median_fuse_s_per_update"] = fuse["buffer"]
        for pool in pools:
            tag = f"{size}_C{pool}"
            for variant, (rule, sets, policies) in variants.items():
                runs: dict[str, list[dict[str, float]]] = {pol: [] for pol in policies}
                for seed in seeds:
                    pop, inter = population(count * per_job, seed)
                    parties = Parties(pop, inter, per_job, 8.0 * nbytes)
                    jobs = make_jobs(parties, count, per_job, rounds, deploy, fuse[rule], rule)
                    for policy in runs:
                        runs[policy].append(simulate(policy, pool, parties, jobs, sets))
                med = {
                    pol: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                    for pol, rs in runs.items()
                }
                prefix = tag if variant == "sum" else f"{tag}_{variant}"
                for pol, vals in med.items():
                    for k, v in vals.items():
                        figures[f"{prefix}_{pol}_{k}"] = v
            # savings and added latency against eager with the same fusion rule
            for variant, rule in (("sum", "sum"), ("bound", "sum"), ("buffer", "buffer")):
                base = tag if rule == "sum" else f"{tag}_buffer"
                prefix = tag if variant == "sum" else f"{tag}_{variant}"
                eager_s = figures[f"{base}_eager_aggregator_s"]
                for pol in variants[variant][2]:
                    if pol == "eager":
                        continue
                    figures[f"{prefix}_{pol}_saving_vs_eager"] = (
                        1 - figures[f"{prefix}_{pol}_aggregator_s"] / eager_s
                    )
                figures[f"{prefix}_jit_added_latency_share_of_round"] = (
                    figures[f"{prefix}_jit_latency_median"]
                    - figures[f"{base}_eager_latency_median"]
                ) / figures[f"{base}_eager_round_median"]
            saved = figures[f"{tag}_jit_saving_vs_eager"]
            added = figures[f"{tag}_jit_added_latency_share_of_round"]
            targets[f"{tag}: JIT saves >= 70% aggregator-s"] = {"value": saved, "met": saved >= 0.7}
            targets[f"{tag}: JIT added latency <= 2% of round"] = {
                "value": added,
                "met": added <= 0.02,
            }
    report("W-jit", "W-jit", figures, targets, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())

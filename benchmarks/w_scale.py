"""W-scale (BENCHMARKS.md): a million clients on one machine, through `fedtempo run`'s own build.

configs/w_scale.toml: LEAF Synthetic(0.5, 0.5) with seed 0 for 1,000,000 devices (power-law
sizes), each device's data generated from its own stream only while it trains
(``data.synthetic.lazy``); logistic regression, asynchronous FedBuff with concurrency 1,000,
50,000 updates on the virtual clock; phone compute traces and FCC bandwidth traces. The run is
built by ``fedtempo.experiment.build`` exactly as ``fedtempo run configs/w_scale.toml`` builds it
(executor "auto": inline, similar-length clients fused with vmap). Measures wall time, time
inside client training (which includes generating the client's data), framework overhead per
event (simulation wall time minus training, divided by the number of events), peak memory, and
memory per idle client (tracemalloc over the build, its growth from N/2 to N clients divided by
N/2). The final model is evaluated on the test samples of 2,000 devices (``eval.test_devices``).

    python benchmarks/w_scale.py [--quick] [--clients N] [--updates N] [--concurrency C]
                                 [--profile]
"""

from __future__ import annotations

import argparse
import functools
import gc
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import peak_memory_mb, report

from fedtempo.experiment.build import build
from fedtempo.experiment.config import ExperimentConfig, load
from fedtempo.experiment.taskdata import task_data
from fedtempo.rng import Streams
from fedtempo.sim import Recorder

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "w_scale.toml"


def config(clients: int, updates: int, concurrency: int = 1000) -> ExperimentConfig:
    return load(
        CONFIG,
        [
            f"partition.num_clients={clients}",
            f"server.concurrency={concurrency}",
            f"server.max_updates={updates}",
        ],
    )


class Clock:
    """Adds up the host seconds spent inside the functions it wraps (client training)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        return timed


def _built_bytes(cfg: ExperimentConfig) -> int:
    """Bytes traced while building the run (its data source, trainer, population, driver),
    less its test set (the test samples of ``eval.test_devices`` devices: a fixed count of
    devices, but their power-law sizes differ from one N to another)."""
    test = task_data(cfg, Streams(cfg.seed)).test
    gc.collect()
    tracemalloc.start()
    built = build(cfg, Recorder())
    used = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    built.simulation.executor.close()
    del built
    return used - test.x.numpy().nbytes - test.y.numpy().nbytes


def marginal_client_bytes(cfg: ExperimentConfig, n: int) -> float:
    """Memory per idle client: the growth of the built run from N/2 to N clients (fixed costs
    such as parsed traces, the model and the test set cancel out)."""
    sized = lambda k: cfg.model_copy(  # noqa: E731
        update={"partition": cfg.partition.model_copy(update={"num_clients": k})}
    )
    _built_bytes(sized(10))  # warm-up: one-time imports and caches
    small = _built_bytes(sized(n // 2))
    full = _built_bytes(sized(n))
    return (full - small) / (n - n // 2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--clients", type=int, default=1_000_000)
    ap.add_argument("--updates", type=int, default=50_000)
    ap.add_argument("--concurrency", type=int, default=1_000)
    ap.add_argument("--memory-clients", type=int, default=100_000, help="for the per-client bytes")
    ap.add_argument("--profile", action="store_true", help="pyinstrument the simulation")
    args = ap.parse_args(argv)
    if args.quick:
        args.clients, args.updates, args.concurrency, args.memory_clients = 3000, 500, 50, 3000
    t_start = time.perf_counter()
    cfg = config(args.clients, args.updates, args.concurrency)
    # (tracemalloc slows what it traces some fivefold: the per-client bytes are measured on
    # --memory-clients clients, up to N; they do not depend on N, W-scale's first version showed)
    per_client_bytes = marginal_client_bytes(cfg, min(args.memory_clients, args.clients))
    t_build = time.perf_counter()
    recorder = Recorder()
    built = build(cfg, recorder)
    clock, trainer = Clock(), built.task.trainer
    trainer.train = clock.wrap(trainer.train)  # type: ignore[method-assign]
    trainer.train_many = clock.wrap(trainer.train_many)  # type: ignore[method-assign]
    sim = built.simulation
    print(f"executor: {type(sim.executor).__name__}", flush=True)
    build_s = time.perf_counter() - t_build

    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler()
        profiler.start()
    t0 = time.perf_counter()
    result = sim.run()
    sim_wall = time.perf_counter() - t0
    if profiler is not None:
        profiler.stop()
        print(profiler.output_text(unicode=False, color=False, show_all=False)[:6000])
    acc = recorder.evaluations[-1].accuracy
    events = len(recorder.events)
    overhead = (sim_wall - clock.seconds) / events
    figures = {
        "clients": float(args.clients),
        "updates": float(built.task.model.updates_applied),
        "events": float(events),
        "concurrency": float(args.concurrency),
        "build_seconds": build_s,
        "wall_seconds": time.perf_counter() - t_start,
        "simulation_seconds": sim_wall,
        "training_seconds": clock.seconds,
        "overhead_per_event_us": 1e6 * overhead,
        "memory_per_idle_client_bytes": per_client_bytes,
        "peak_memory_mb": peak_memory_mb(),
        "virtual_seconds": result.virtual_time,
        "final_accuracy": acc,
    }
    targets = {
        "peak_memory_mb": {"value": figures["peak_memory_mb"], "met": peak_memory_mb() < 4096},
        "overhead_per_event_us": {"value": 1e6 * overhead, "met": overhead < 100e-6},
        "memory_per_idle_client_bytes": {"value": per_client_bytes, "met": per_client_bytes < 200},
    }
    report(
        f"W-scale ({'quick' if args.quick else 'full'})", "W-scale", figures, targets, args.quick
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""W-scale (BENCHMARKS.md): 10,000 clients on one machine.

LEAF Synthetic(0.5, 0.5) generated with seed 0 for 10,000 devices (power-law sizes), logistic
regression, asynchronous FedBuff with concurrency 100, 20,000 updates on the virtual clock; phone
compute traces and FCC bandwidth traces. Measures wall time, time inside client training,
framework overhead per event (simulation wall time minus training and evaluation, divided by the
number of events), peak memory and memory per idle client (the framework's per-client state:
tracemalloc over building the trainer, population and server, divided by the clients).

    python benchmarks/w_scale.py [--quick] [--clients N] [--updates N] [--profile]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc

import simpy
from common import peak_memory_mb, report

from fedtempo.client.local import LocalSpec
from fedtempo.client.local import evaluate as evaluate_params
from fedtempo.client.trainer import ClientTrainer
from fedtempo.experiment.build import load_data, make_partition
from fedtempo.experiment.config import load
from fedtempo.experiment.drivers import async_driver, async_rule
from fedtempo.experiment.population import build_population
from fedtempo.models import build_model, profile_model
from fedtempo.params import flatten
from fedtempo.rng import Streams
from fedtempo.sim import InlineExecutor, Recorder, Runtime, SimTask, Simulation
from fedtempo.sim.asyncserver import AsyncServer
from fedtempo.sim.task import GlobalModel


def config(clients: int, updates: int):  # type: ignore[no-untyped-def]
    return load(
        None,
        [
            "name=w-scale",
            "data.dataset=synthetic",
            "data.synthetic.alpha=0.5",
            "data.synthetic.beta=0.5",
            "partition.scheme=natural",
            f"partition.num_clients={clients}",
            "model.name=logreg",
            "train.batch_size=32",
            "train.lr=0.01",
            "server.algorithm=fedbuff",
            "server.concurrency=100",
            f"server.max_updates={updates}",
            "server.fedbuff.buffer_size=10",
            "devices.compute.source=training-latency",
            "devices.compute.median_flops=2.5e5",
            "devices.uplink.kind=trace",
            "devices.downlink.kind=trace",
            "eval.interval=0",
        ],
    )


class TimedTrainer(ClientTrainer):
    """Adds up the host seconds spent inside client training."""

    seconds = 0.0

    def train(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        try:
            return super().train(*args, **kwargs)
        finally:
            TimedTrainer.seconds += time.perf_counter() - t0


def _client_side(cfg, bundle, parts, streams) -> int:  # type: ignore[no-untyped-def]
    """Bytes traced while building everything that grows with the number of clients."""
    n = len(parts)
    gc.collect()
    tracemalloc.start()
    model = build_model("logreg", bundle.train.input_shape, 10, streams.torch("init", 0))
    trainer = ClientTrainer(0, model, bundle.train.x, bundle.train.y, parts, LocalSpec(), streams)
    population = build_population(cfg.devices, n, streams)
    task = SimTask(
        0,
        "m",
        trainer,
        profile_model("logreg", model, (60,)),
        GlobalModel(flatten(model)),
        lambda p: (0.0, 0.0),
    )
    rt = Runtime(simpy.Environment(), population, InlineExecutor({0: trainer}), Recorder(), streams)
    server = AsyncServer(rt, task, rule=async_rule(cfg.server), concurrency=1)
    used = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del server, rt, task, population, trainer
    return used


def marginal_client_bytes(cfg, bundle, parts, streams) -> float:  # type: ignore[no-untyped-def]
    """Memory per idle client: the growth of the client-side state from N/2 to N clients
    (fixed costs such as parsed traces cancel out). Client data itself is not counted."""
    half = len(parts) // 2
    _client_side(cfg, bundle, parts[:10], streams)  # warm-up: one-time imports and caches
    small = _client_side(cfg, bundle, parts[:half], streams)
    full = _client_side(cfg, bundle, parts, streams)
    return (full - small) / (len(parts) - half)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--clients", type=int, default=10_000)
    ap.add_argument("--updates", type=int, default=20_000)
    ap.add_argument("--profile", action="store_true", help="pyinstrument the simulation")
    args = ap.parse_args(argv)
    if args.quick:
        args.clients, args.updates = 300, 500
    t_start = time.perf_counter()
    cfg = config(args.clients, args.updates)
    streams = Streams(cfg.seed)
    bundle = load_data(cfg, streams)
    t_data = time.perf_counter() - t_start

    client_train, _ = make_partition(cfg, bundle, streams)
    per_client_bytes = marginal_client_bytes(cfg, bundle, client_train, streams)
    model = build_model("logreg", bundle.train.input_shape, 10, streams.torch("init", 0))
    spec = LocalSpec(epochs=1, batch_size=32, lr=0.01)
    trainer = TimedTrainer(0, model, bundle.train.x, bundle.train.y, client_train, spec, streams)
    del client_train
    population = build_population(cfg.devices, args.clients, streams)
    recorder = Recorder()
    evaluate = lambda p: (0.0, 0.0)  # noqa: E731  (evaluated once, outside the timed loop)
    task = SimTask(
        0,
        "w-scale",
        trainer,
        profile_model("logreg", model, (60,)),
        GlobalModel(flatten(model)),
        evaluate,
    )
    env = simpy.Environment()
    executor = InlineExecutor({0: trainer})
    rt = Runtime(env, population, executor, recorder, streams)
    driver = async_driver(cfg.server, rt, task)  # type: ignore[arg-type]
    sim = Simulation([task], [lambda env, t: driver.run()], executor, recorder, env=env)

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
    acc, _ = evaluate_params(model, result.final_params[0], bundle.test.x, bundle.test.y)
    events = len(recorder.events)
    overhead = (sim_wall - TimedTrainer.seconds) / events
    figures = {
        "clients": float(args.clients),
        "updates": float(task.model.updates_applied),
        "events": float(events),
        "data_generation_seconds": t_data,
        "wall_seconds": time.perf_counter() - t_start,
        "simulation_seconds": sim_wall,
        "training_seconds": TimedTrainer.seconds,
        "overhead_per_event_us": 1e6 * overhead,
        "memory_per_idle_client_bytes": per_client_bytes,
        "peak_memory_mb": peak_memory_mb(),
        "virtual_seconds": result.virtual_time,
        "final_accuracy": acc,
    }
    targets = {
        "peak_memory_mb": {"value": figures["peak_memory_mb"], "met": peak_memory_mb() < 2048},
        "overhead_per_event_us": {"value": 1e6 * overhead, "met": overhead < 200e-6},
        "memory_per_idle_client_bytes": {"value": per_client_bytes, "met": per_client_bytes < 2048},
    }
    report(
        f"W-scale ({'quick' if args.quick else 'full'})", "W-scale", figures, targets, args.quick
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

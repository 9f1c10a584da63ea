"""W-scale (BENCHMARKS.md): a million clients on one machine.

LEAF Synthetic(0.5, 0.5) with seed 0 for 1,000,000 devices (power-law sizes), each device's data
generated from its own stream only while it trains (``SyntheticClients``); logistic regression,
asynchronous FedBuff with concurrency 1,000, 50,000 updates on the virtual clock; phone compute
traces and FCC bandwidth traces. Measures wall time, time inside client training (which includes
generating the client's data), framework overhead per event (simulation wall time minus training,
divided by the number of events), peak memory, and memory per idle client (the framework's
per-client state: tracemalloc over building the client data source, trainer, population and
server, its growth from N/2 to N clients divided by N/2). The final model is evaluated on the
test samples of 2,000 devices drawn from the stream ("w-scale-eval").

    python benchmarks/w_scale.py [--quick] [--clients N] [--updates N] [--concurrency C]
                                 [--profile]
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
from fedtempo.data.synthetic import SyntheticClients
from fedtempo.experiment.config import load
from fedtempo.experiment.drivers import async_driver, async_rule
from fedtempo.experiment.population import build_population
from fedtempo.models import build_model, profile_model
from fedtempo.params import flatten
from fedtempo.rng import Streams
from fedtempo.sim import InlineExecutor, Recorder, Runtime, SimTask, Simulation
from fedtempo.sim.asyncserver import AsyncServer
from fedtempo.sim.task import GlobalModel


def config(clients: int, updates: int, concurrency: int = 1000):  # type: ignore[no-untyped-def]
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
            f"server.concurrency={concurrency}",
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


def _source(cfg, streams, n: int) -> SyntheticClients:  # type: ignore[no-untyped-def]
    s = cfg.data.synthetic
    return SyntheticClients(
        s.alpha,
        s.beta,
        n,
        streams.numpy("data", 0),
        size_mean=s.size_mean,
        size_sigma=s.size_sigma,
        min_size=s.min_size,
        test_fraction=cfg.data.test_fraction,
    )


def _client_side(cfg, streams, n: int) -> int:  # type: ignore[no-untyped-def]
    """Bytes traced while building everything that grows with the number of clients."""
    gc.collect()
    tracemalloc.start()
    source = _source(cfg, streams, n)
    model = build_model("logreg", source.input_shape, 10, streams.torch("init", 0))
    trainer = ClientTrainer.over(0, model, source, LocalSpec(), streams)
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
    del server, rt, task, population, trainer, source
    return used


def marginal_client_bytes(cfg, streams, n: int) -> float:  # type: ignore[no-untyped-def]
    """Memory per idle client: the growth of the client-side state from N/2 to N clients
    (fixed costs such as parsed traces cancel out)."""
    _client_side(cfg, streams, 10)  # warm-up: one-time imports and caches
    small = _client_side(cfg, streams, n // 2)
    full = _client_side(cfg, streams, n)
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
    streams = Streams(cfg.seed)
    # (tracemalloc slows what it traces some fivefold: the per-client bytes are measured on
    # --memory-clients clients, up to N; they do not depend on N, W-scale's first version showed)
    per_client_bytes = marginal_client_bytes(cfg, streams, min(args.memory_clients, args.clients))
    t_build = time.perf_counter()
    source = _source(cfg, streams, args.clients)
    model = build_model("logreg", source.input_shape, 10, streams.torch("init", 0))
    spec = LocalSpec(epochs=1, batch_size=32, lr=0.01)
    trainer = TimedTrainer.over(0, model, source, spec, streams)
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
    pick = streams.numpy("w-scale-eval").choice(
        args.clients, min(2000, args.clients), replace=False
    )
    test = source.test_data(sorted(int(k) for k in pick))
    acc, _ = evaluate_params(model, result.final_params[0], test.x, test.y)
    events = len(recorder.events)
    overhead = (sim_wall - TimedTrainer.seconds) / events
    figures = {
        "clients": float(args.clients),
        "updates": float(task.model.updates_applied),
        "events": float(events),
        "concurrency": float(args.concurrency),
        "build_seconds": build_s,
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

"""An asynchronous run over clients whose data is generated per client (W-scale's setting) is
the same on the process pool (each worker generates what it trains) as inline."""

from __future__ import annotations

import time

import numpy as np
import pytest
import simpy
import torch

from fedtempo.aggregation import AsyncAggregator, BufferStep, Constant
from fedtempo.algorithms.jobs import TrainingJob
from fedtempo.client.local import LocalSpec
from fedtempo.client.trainer import ClientTrainer
from fedtempo.data.synthetic import SyntheticClients
from fedtempo.experiment.population import build_population
from fedtempo.experiment.sections import DevicesConfig
from fedtempo.models import build_model, profile_model
from fedtempo.params import flatten
from fedtempo.rng import Streams
from fedtempo.sim import InlineExecutor, Recorder, Runtime, SimTask, Simulation, parallel
from fedtempo.sim.asyncserver import AsyncServer
from fedtempo.sim.parallel import ProcessExecutor
from fedtempo.sim.task import GlobalModel


def _run(pool: bool) -> tuple[torch.Tensor, list[tuple[object, ...]]]:
    streams = Streams(3)
    source = SyntheticClients(0.5, 0.5, 400, streams.numpy("data", 0), size_mean=3.0)
    model = build_model("logreg", source.input_shape, 10, streams.torch("init", 0))
    trainer = ClientTrainer.over(0, model, source, LocalSpec(batch_size=16, lr=0.05), streams)
    task = SimTask(
        0,
        "lazy",
        trainer,
        profile_model("logreg", model, (60,)),
        GlobalModel(flatten(model)),
        lambda p: (0.0, 0.0),
    )
    executor = ProcessExecutor({0: trainer}, workers=2) if pool else InlineExecutor({0: trainer})
    population = build_population(DevicesConfig(), len(source), streams)
    rt = Runtime(simpy.Environment(), population, executor, Recorder(), streams)
    rule = AsyncAggregator(Constant(), BufferStep(size=5))
    server = AsyncServer(rt, task, rule=rule, concurrency=20, max_updates=60)
    sim = Simulation([task], [lambda env, t: server.run()], executor, rt.recorder, env=rt.env)
    try:
        result = sim.run()
    finally:
        executor.close()
    events = [(e.time, e.kind, e.client, e.version) for e in rt.recorder.events]
    return result.final_params[0], events


def test_lazy_clients_run_alike_inline_and_on_the_pool() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the pool's workers: then the two are bit-identical
    try:
        inline, events = _run(pool=False)
        pooled, events_pooled = _run(pool=True)
    finally:
        torch.set_num_threads(threads)
    assert inline.equal(pooled) and events == events_pooled
    assert sum(1 for e in events if e[1] == "aggregate") == 60 // 5
    assert not np.isclose(float(inline.abs().sum()), 0.0)


def test_the_pool_runs_the_largest_waiting_training_first() -> None:
    """Trainings wait until a result is asked for, then go to the pool largest first: with one
    worker, the smallest training's result comes only after the largest one has run."""
    streams = Streams(5)
    source = SyntheticClients(0.5, 0.5, 60, streams.numpy("data", 0), size_mean=4.0)
    model = build_model("logreg", source.input_shape, 10, streams.torch("init", 0))
    trainer = ClientTrainer.over(0, model, source, LocalSpec(batch_size=8, lr=0.05), streams)
    by_size = sorted(range(len(source)), key=source.num_samples)
    small, large = by_size[0], by_size[-1]
    assert source.num_samples(large) > 4 * source.num_samples(small)
    start = flatten(model)
    executor = ProcessExecutor({0: trainer}, workers=1)
    try:
        first = executor.submit(TrainingJob(0, small, 0, start))
        dropped = executor.submit(TrainingJob(0, by_size[1], 0, start))
        last = executor.submit(TrainingJob(0, large, 0, start))
        dropped.cancel()  # never sent to the pool
        update = first.result()
        assert last.future is not None and last.future.done()  # type: ignore[attr-defined]
        assert dropped.future is None  # type: ignore[attr-defined]
        assert update.client == small and last.result().client == large
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as the worker: then the two are bit-identical
        try:
            assert update.delta.equal(trainer.train(small, 0, start).delta)
        finally:
            torch.set_num_threads(threads)
    finally:
        executor.close()


def test_vectors_cross_by_value_or_by_shared_memory_with_the_same_bits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Small start vectors and updates cross the pipe by value, large ones as shared memory;
    either way the update is bit-identical to inline training. Closed, the workers exit cleanly
    (status 0: their exit handler skips torch's teardown, it does not crash them)."""
    assert parallel.by_value(torch.zeros(parallel.BY_VALUE_MAX + 1)) is None
    small = parallel.by_value(torch.arange(3.0))
    assert isinstance(small, np.ndarray) and small.tolist() == [0.0, 1.0, 2.0]
    streams = Streams(5)
    source = SyntheticClients(0.5, 0.5, 20, streams.numpy("data", 0), size_mean=3.0)
    model = build_model("logreg", source.input_shape, 10, streams.torch("init", 0))
    trainer = ClientTrainer.over(0, model, source, LocalSpec(batch_size=8, lr=0.05), streams)
    start = flatten(model)
    executor = ProcessExecutor({0: trainer}, workers=1)
    try:
        by_value = executor.submit(TrainingJob(0, 3, 0, start)).result()
        monkeypatch.setattr(parallel, "BY_VALUE_MAX", 0)  # this process's starts: shared memory
        shared_start = start.clone()
        by_memory = executor.submit(TrainingJob(0, 3, 0, shared_start)).result()
        assert shared_start.is_shared() and not start.is_shared()  # type: ignore[no-untyped-call]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            inline = trainer.train(3, 0, start).delta
        finally:
            torch.set_num_threads(threads)
        assert by_value.delta.equal(inline) and by_memory.delta.equal(inline)
        processes = list(executor._workers.pool._processes.values())  # type: ignore[union-attr]
    finally:
        executor.close()
    # the pool's own thread joins its workers too: whichever of the two reaps a worker first, the
    # other's waitpid finds no child and reads no status yet, so wait until the status is known
    deadline = time.monotonic() + 10
    for p in processes:
        while p.exitcode is None and time.monotonic() < deadline:
            p.join(timeout=0.05)
        assert p.exitcode == 0


class _Broken(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("evaluated in the main process")


def test_an_idle_pool_splits_an_evaluation_over_its_workers_to_the_same_bits() -> None:
    """HeldOut's parts combine to the bits of one evaluation; an idle pool evaluates the parts
    in its workers (this process's workspace is broken, and the result is still exact), one
    with trainings waiting leaves the evaluation to this thread."""
    from fedtempo.client.local import HeldOut, evaluate

    streams = Streams(7)
    source = SyntheticClients(0.5, 0.5, 30, streams.numpy("data", 0), size_mean=4.0)
    model = build_model("logreg", source.input_shape, 10, streams.torch("init", 0))
    trainer = ClientTrainer.over(0, model, source, LocalSpec(batch_size=8, lr=0.05), streams)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(2500, 60, generator=g), torch.randint(0, 10, (2500,), generator=g)
    params = flatten(model) + 0.1 * torch.randn(flatten(model).numel(), generator=g)
    held = HeldOut(build_model("logreg", (60,), 10, streams.torch("init", 0)), x, y, batch=256)
    expected = evaluate(held.model, params, x, y, batch=256)
    assert held(params) == expected
    assert held.parts(3) == [(0, 3), (3, 7), (7, 10)] and held.batches == 10
    assert held.combine([held.part(params, a, b) for a, b in held.parts(3)]) == expected
    executor = ProcessExecutor({0: trainer}, workers=2, held_out={0: held})
    try:
        assert executor.evaluate(0, held, params) == expected  # the workers now hold theirs
        working = held.model
        held.model = _Broken()
        assert executor.evaluate(0, held, params) == expected  # so by the workers
        handles = [executor.submit(TrainingJob(0, c, 0, flatten(model))) for c in range(6)]
        held.model = working
        assert executor.evaluate(0, held, params) == expected  # here: trainings are waiting
        executor.flush()
        executor.stop_training()  # each sent training completes, or is dropped before it starts
        futures = [h.future for h in handles]  # type: ignore[attr-defined]
        for c, f in enumerate(futures):
            assert f.cancelled() or f.result()[0].client == c
    finally:
        executor.close()

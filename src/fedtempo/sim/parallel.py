"""A process-pool executor: client trainings run in worker processes while the clock moves on.

The workers (``WorkerPool``) can be started before the data is loaded, so that their start-up
(forked: nothing to import; spawned: an interpreter and torch) overlaps the loading; the executor
then installs the tasks' ClientTrainers in every worker once: data held in memory is moved to
shared memory first, so it crosses as shared-memory handles (torch.multiprocessing), not copies.
Per training only the job crosses, and the update comes back; their vectors cross by value up to
``BY_VALUE_MAX`` entries (a copy through the pipe is cheaper than a shared-memory handle's
descriptor handshake), and larger start vectors are moved to shared memory once per model version.
A worker runs the same ``ClientTrainer.train`` with one torch thread, so results are bit-identical
to ``InlineExecutor`` (with ``threads = 1``).

Submissions wait in the executor until a result is next asked for, then go to the pool largest
first (samples a training passes through): a synchronous round's trainings are all submitted at
one virtual instant, and longest-first keeps one worker from finishing the round's largest client
alone. The wait costs no real time: between a submission and the next result the driver only
moves the virtual clock, or evaluates, and the simulation flushes before it evaluates.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import copy
import dataclasses
import os
import sys
import threading
from typing import Any

import numpy as np
import torch
import torch.multiprocessing as tmp

from fedtempo.algorithms.jobs import TrainingJob, job_spec, run_job
from fedtempo.client.local import HeldOut, Update
from fedtempo.client.trainer import ClientTrainer
from fedtempo.sim.executor import Evaluator, Handle, Metrics

_TRAINERS: dict[int, ClientTrainer] = {}
_HELD_OUT: dict[int, HeldOut] = {}
_BARRIER: Any = None
INSTALL_TIMEOUT_S = 300.0  # a worker that died before its install breaks the barrier


def _init_worker(barrier: Any) -> None:
    global _BARRIER
    torch.set_num_threads(1)
    _BARRIER = barrier
    # A spawned worker that has been told to stop has nothing left to save, but the interpreter
    # would tear down torch module by module (about 0.5 s, which the main process waits for
    # when it joins its workers at exit): the last exit handler ends the process at once.
    atexit.register(os._exit, 0)


def _started() -> None:
    """A job that only makes the pool start a worker."""


def _install(trainers: dict[int, ClientTrainer], held_out: dict[int, HeldOut]) -> None:
    """Sent once per worker: the barrier holds each worker in its install until every worker
    has one, so that no worker takes two and another none."""
    _BARRIER.wait(INSTALL_TIMEOUT_S)
    _TRAINERS.clear()
    _HELD_OUT.clear()
    for task, h in held_out.items():  # the data stays shared (read only), the workspace not
        _HELD_OUT[task] = dataclasses.replace(h, model=copy.deepcopy(h.model))
    for task, trainer in trainers.items():
        # torch.multiprocessing sends module parameters as shared memory: every worker would
        # train on the same storage. Each worker needs a private workspace.
        # The blocks of a splittable model share its modules: copied together, they still do.
        trainer.model, blocks = copy.deepcopy((trainer.model, trainer.blocks))
        if blocks is not None:
            trainer.blocks = blocks
        _TRAINERS[task] = trainer


BY_VALUE_MAX = 1 << 20  # elements: vectors up to 4 MiB cross by value, larger by shared memory
_EMPTY = torch.empty(0)
Vector = np.ndarray | None  # a vector sent by value, or None (it travels in its tensor field)
Part = tuple[int, list[float]]  # an evaluation's part: correct predictions, each batch's loss


def by_value(t: torch.Tensor | None) -> Vector:
    """A vector to send by value (numpy pickles its bytes into the pipe: one copy, no shared
    memory file, no descriptor passed through the resource sharer's authenticated handshake,
    which costs some 2 ms per tensor), or None if it is large enough for shared memory to pay."""
    if t is None or t.numel() > BY_VALUE_MAX:
        return None
    return t.numpy()


def _train(job: TrainingJob, start: Vector) -> tuple[Update, Vector, Vector]:
    if start is not None:
        job = dataclasses.replace(job, start=torch.from_numpy(start))
    update = run_job(_TRAINERS[job.task], job)
    delta, keep = by_value(update.delta), by_value(update.keep)
    light = dataclasses.replace(
        update,
        delta=_EMPTY if delta is not None else update.delta,
        keep=_EMPTY if keep is not None else update.keep,
    )
    return light, delta, keep


def _evaluate(task: int, params: np.ndarray | torch.Tensor, first: int, last: int) -> Part:
    vector = torch.from_numpy(params) if isinstance(params, np.ndarray) else params
    return _HELD_OUT[task].part(vector, first, last)


def _received(future: cf.Future[tuple[Update, Vector, Vector]]) -> Update:
    update, delta, keep = future.result()
    if delta is None and keep is None:
        return update
    return dataclasses.replace(
        update,
        delta=torch.from_numpy(delta) if delta is not None else update.delta,
        keep=torch.from_numpy(keep) if keep is not None else update.keep,
    )


class _PoolHandle:
    def __init__(self, owner: ProcessExecutor, job: TrainingJob, cost: int) -> None:
        self._owner = owner
        self.job = job
        self.cost = cost
        self.future: cf.Future[tuple[Update, Vector, Vector]] | None = None
        self._update: Update | None = None

    def result(self) -> Update:
        if self._update is None:
            # everything waiting goes to the pool first: while this thread waits, the workers
            # must not run dry (asynchronous servers submit one training per result they take)
            self._owner.flush()
            assert self.future is not None, "a cancelled training has no result"
            self._update = _received(self.future)
        return self._update

    def cancel(self) -> None:
        if self.future is None:
            self._owner.drop(self)
        else:
            self.future.cancel()  # a job not yet started never runs


def start_method() -> str:
    """How workers start: forked where that is safe, spawned elsewhere.

    A forked worker starts with this process's modules already imported (torch, fedtempo: 1.3 s
    of CPU per spawned worker, which on a small machine competes with this process loading the
    data). Fork is safe on Linux from a process with one thread (a worker sets one torch thread
    before its first torch operation, as torch's own DataLoader workers do). With other threads
    running, one of them could hold a lock that the child would inherit locked, so such a
    process (a notebook, a test runner) spawns. Results are the same either way."""
    if sys.platform == "linux" and threading.active_count() == 1:
        return "fork"
    return "spawn"


class WorkerPool:
    """``workers`` processes (forked or spawned: ``start_method``), started at once."""

    def __init__(self, workers: int = 2) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        context: Any = tmp.get_context(start_method())
        self.workers = workers
        self.barrier = context.Barrier(workers)
        self.pool = cf.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(self.barrier,),
        )
        for _ in range(workers):  # the pool starts a worker per job it cannot hand to an idle one
            self.pool.submit(_started)

    def install(
        self, trainers: dict[int, ClientTrainer], held_out: dict[int, HeldOut] | None = None
    ) -> None:
        """Every worker trains with ``trainers`` (and evaluates on ``held_out``, by task) from
        its next job on (queued, not awaited: the jobs submitted after it run after it)."""
        for _ in range(self.workers):
            self.pool.submit(_install, trainers, held_out or {})

    def close(self) -> None:
        """Tell the workers to exit, without waiting for them: they go while this process
        writes its results (the interpreter joins them at exit)."""
        self.pool.shutdown(wait=False, cancel_futures=True)


class ProcessExecutor:
    """Runs trainings on a ``WorkerPool`` (of ``workers`` processes, started here unless
    ``pool`` is one started earlier; the executor closes it). An evaluation on a task's
    ``held_out`` set asked for while no training is waiting or running (a synchronous round's
    end, the run's end) is split over the workers in contiguous parts of its batches."""

    def __init__(
        self,
        trainers: dict[int, ClientTrainer],
        workers: int = 2,
        pool: WorkerPool | None = None,
        held_out: dict[int, HeldOut] | None = None,
    ) -> None:
        for t in trainers.values():
            t.source.share_memory()
        self._held_out = held_out or {}
        for h in self._held_out.values():
            h.x.share_memory_()  # type: ignore[no-untyped-call]
            h.y.share_memory_()  # type: ignore[no-untyped-call]
        self._workers = pool if pool is not None else WorkerPool(workers)
        self._workers.install(trainers, self._held_out)
        self._trainers = trainers
        self._pending: list[_PoolHandle] = []
        # trainings sent and not yet done (a done one leaves from the pool's own thread)
        self._sent: set[cf.Future[tuple[Update, Vector, Vector]]] = set()

    def submit(self, job: TrainingJob) -> Handle:
        if by_value(job.start) is None and not job.start.is_shared():  # type: ignore[no-untyped-call]
            job.start.share_memory_()  # type: ignore[no-untyped-call]  # once per model version
        trainer = self._trainers[job.task]
        cost = job_spec(trainer.spec, job).samples_processed(
            trainer.num_samples(job.client), job.epochs
        )
        handle = _PoolHandle(self, job, cost)
        self._pending.append(handle)
        return handle

    def drop(self, handle: _PoolHandle) -> None:
        if handle in self._pending:  # not already cleared by close
            self._pending.remove(handle)

    def flush(self) -> None:
        """Send every waiting training to the pool, largest first (ties: submission order)."""
        waiting, self._pending = self._pending, []
        for h in sorted(waiting, key=lambda h: -h.cost):  # sorted() is stable
            start = by_value(h.job.start)
            job = h.job if start is None else dataclasses.replace(h.job, start=_EMPTY)
            h.future = self._workers.pool.submit(_train, job, start)
            self._sent.add(h.future)
            h.future.add_done_callback(self._sent.discard)

    def _idle(self) -> bool:
        return not self._pending and not self._sent

    def evaluate(self, task: int, evaluator: Evaluator, params: torch.Tensor) -> Metrics:
        held = self._held_out.get(task)
        if held is None or evaluator is not held or not self._idle():
            return evaluator(params)  # beside the trainings, in this thread
        vector = by_value(params)
        sent = vector if vector is not None else params.clone().share_memory_()  # type: ignore[no-untyped-call]
        parts = [
            self._workers.pool.submit(_evaluate, task, sent, first, last)
            for first, last in held.parts(self._workers.workers)
        ]
        return held.combine([p.result() for p in parts])

    def stop_training(self) -> None:
        self._pending.clear()
        for f in list(self._sent):
            f.cancel()  # one not yet started never runs

    def close(self) -> None:
        self._pending.clear()
        self._workers.close()

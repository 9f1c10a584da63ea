"""A process-pool executor: client trainings run in worker processes while the clock moves on.

The workers (``WorkerPool``) can be started before the data is loaded, so that their start-up
(an interpreter, torch's import) overlaps the main process's; the executor then installs the
tasks' ClientTrainers in every worker once: data held in memory is moved to shared memory first,
so it crosses as shared-memory handles (torch.multiprocessing), not copies. Per
training only the job crosses; its start vector is moved to shared memory once per model version
and crosses as a handle too. A worker runs the same ``ClientTrainer.train`` with one torch thread,
so results are bit-identical to ``InlineExecutor`` (with ``threads = 1``).

Submissions wait in the executor until a result is first asked for, then go to the pool largest
first (samples a training passes through): a synchronous round's trainings are all submitted at
one virtual instant, and longest-first keeps one worker from finishing the round's largest client
alone. The wait costs no real time: between a submission and the next result the driver only
moves the virtual clock, or evaluates, and the simulation flushes before it evaluates.
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
from typing import Any

import torch
import torch.multiprocessing as tmp

from fedtempo.algorithms.jobs import TrainingJob, job_spec, run_job
from fedtempo.client.local import Update
from fedtempo.client.trainer import ClientTrainer
from fedtempo.sim.executor import Handle

_TRAINERS: dict[int, ClientTrainer] = {}
_BARRIER: Any = None
INSTALL_TIMEOUT_S = 300.0  # a worker that died before its install breaks the barrier


def _init_worker(barrier: Any) -> None:
    global _BARRIER
    torch.set_num_threads(1)
    _BARRIER = barrier


def _started() -> None:
    """A job that only makes the pool start a worker."""


def _install(trainers: dict[int, ClientTrainer]) -> None:
    """Sent once per worker: the barrier holds each worker in its install until every worker
    has one, so that no worker takes two and another none."""
    _BARRIER.wait(INSTALL_TIMEOUT_S)
    _TRAINERS.clear()
    for task, trainer in trainers.items():
        # torch.multiprocessing sends module parameters as shared memory: every worker would
        # train on the same storage. Each worker needs a private workspace.
        # The blocks of a splittable model share its modules: copied together, they still do.
        trainer.model, blocks = copy.deepcopy((trainer.model, trainer.blocks))
        if blocks is not None:
            trainer.blocks = blocks
        _TRAINERS[task] = trainer


def _train(job: TrainingJob) -> Update:
    return run_job(_TRAINERS[job.task], job)


class _PoolHandle:
    def __init__(self, owner: ProcessExecutor, job: TrainingJob, cost: int) -> None:
        self._owner = owner
        self.job = job
        self.cost = cost
        self.future: cf.Future[Update] | None = None

    def result(self) -> Update:
        if self.future is None:
            self._owner.flush()
        assert self.future is not None, "a cancelled training has no result"
        return self.future.result()

    def cancel(self) -> None:
        if self.future is None:
            self._owner.drop(self)
        else:
            self.future.cancel()  # a job not yet started never runs


class WorkerPool:
    """``workers`` processes (spawned, so safe with torch's thread pools), started at once."""

    def __init__(self, workers: int = 2) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        context: Any = tmp.get_context("spawn")
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

    def install(self, trainers: dict[int, ClientTrainer]) -> None:
        """Every worker trains with ``trainers`` from its next job on (queued, not awaited: the
        trainings submitted after it run after it)."""
        for _ in range(self.workers):
            self.pool.submit(_install, trainers)

    def close(self) -> None:
        """Tell the workers to exit, without waiting for them: they go while this process
        writes its results (the interpreter joins them at exit)."""
        self.pool.shutdown(wait=False, cancel_futures=True)


class ProcessExecutor:
    """Runs trainings on a ``WorkerPool`` (of ``workers`` processes, started here unless
    ``pool`` is one started earlier; the executor closes it)."""

    def __init__(
        self, trainers: dict[int, ClientTrainer], workers: int = 2, pool: WorkerPool | None = None
    ) -> None:
        for t in trainers.values():
            t.source.share_memory()
        self._workers = pool if pool is not None else WorkerPool(workers)
        self._workers.install(trainers)
        self._trainers = trainers
        self._pending: list[_PoolHandle] = []

    def submit(self, job: TrainingJob) -> Handle:
        if not job.start.is_shared():  # type: ignore[no-untyped-call]
            job.start.share_memory_()  # type: ignore[no-untyped-call]
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
            h.future = self._workers.pool.submit(_train, h.job)

    def close(self) -> None:
        self._pending.clear()
        self._workers.close()

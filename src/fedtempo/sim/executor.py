"""Executors run client trainings on behalf of the simulator.

A training whose start model is known is *submitted* when the client is dispatched and its result
is *consumed* at the upload event. Between the two the virtual clock moves on, so a parallel
executor can overlap the real work; an update that is never consumed (a dropped straggler) need
never be computed. Results must not depend on the executor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from fedtempo.algorithms.jobs import TrainingJob, run_job
from fedtempo.client.local import Update
from fedtempo.client.trainer import ClientTrainer

__all__ = ["BatchingExecutor", "Executor", "Handle", "InlineExecutor", "TrainingJob", "run_job"]

Metrics = tuple[float, float]  # (accuracy, loss)
Evaluator = Callable[[torch.Tensor], Metrics]


class Handle(Protocol):
    """A submitted training. ``result`` blocks until the update is there (computing it, for a
    lazy executor); ``cancel`` says it will never be asked for (a failed or interrupted
    session), so an executor may skip it."""

    def result(self) -> Update: ...

    def cancel(self) -> None: ...


class Executor(Protocol):
    """Runs ``TrainingJob``s for a driver. Contract: the update of a job depends only on the
    job and the task's trainer (``run_job``), never on the executor, the order of submissions
    or which other jobs ran; ``close`` releases workers and drops what was never consumed."""

    def submit(self, job: TrainingJob) -> Handle: ...

    def flush(self) -> None:
        """Start now every submitted training that runs beside this thread (a pool's workers),
        before this thread turns to other work: an evaluation, say. A no-op for an executor
        that trains in this thread (lazily) or starts each training as it is submitted."""
        ...

    def evaluate(self, task: int, evaluator: Evaluator, params: torch.Tensor) -> Metrics:
        """``evaluator(params)`` (task ``task``'s accuracy and loss), computed here or, to the
        same bits, by the executor's idle workers."""
        ...

    def stop_training(self) -> None:
        """The run is over: trainings not yet started are dropped (one already running may
        finish); ``evaluate`` still works until ``close``."""
        ...

    def close(self) -> None: ...


class _LazyHandle:
    def __init__(self, trainer: ClientTrainer, job: TrainingJob) -> None:
        self._trainer = trainer
        self._job = job
        self._update: Update | None = None

    def result(self) -> Update:
        if self._update is None:
            self._update = run_job(self._trainer, self._job)
        return self._update

    def cancel(self) -> None:
        pass  # never computed unless asked for


class EvaluatesHere:
    """For an executor without workers of its own to lend: evaluations run in the caller's
    thread; ``stop_training`` drops nothing (a lazy executor never starts a training whose
    result is not asked for; Ray's actors run what they were sent, as on ``cancel``)."""

    def evaluate(self, task: int, evaluator: Evaluator, params: torch.Tensor) -> Metrics:
        return evaluator(params)

    def stop_training(self) -> None:
        pass


class InlineExecutor(EvaluatesHere):
    """Trains in the simulator's own thread, when (and only if) the result is asked for."""

    def __init__(self, trainers: dict[int, ClientTrainer]) -> None:
        self.trainers = trainers

    def submit(self, job: TrainingJob) -> Handle:
        return _LazyHandle(self.trainers[job.task], job)

    def flush(self) -> None:
        pass  # lazy: a training runs when its result is asked for

    def close(self) -> None:
        pass


class _BatchHandle:
    def __init__(self, owner: BatchingExecutor, job: TrainingJob, steps: int) -> None:
        self._owner = owner
        self.job = job
        self.steps = steps
        self.update: Update | None = None

    def result(self) -> Update:
        if self.update is None:
            self._owner.run_pending(self)
        assert self.update is not None
        return self.update

    def cancel(self) -> None:
        self._owner.drop(self)


STEP_SPREAD = 2.0  # a batch runs as long as its longest client: peers within this step ratio
MIN_BATCH = 4  # fewer clients than this train one by one (vmap's cost per step is fixed)


class BatchingExecutor(EvaluatesHere):
    """Lazy like InlineExecutor, but when a result is needed, the pending trainings of that
    task whose step counts are within ``STEP_SPREAD`` of its own (up to ``max_batch``, oldest
    first) run in one vectorised computation (``ClientTrainer.train_many``); with fewer than
    ``MIN_BATCH`` such peers it trains alone, as inline does. (A batch takes as many steps as
    its longest client: power-law client sizes batched blindly cost more than inline.)
    Deterministic; equal to inline up to float rounding."""

    def __init__(self, trainers: dict[int, ClientTrainer], max_batch: int = 64) -> None:
        self.trainers = trainers
        self.max_batch = max_batch
        self._pending: dict[int, list[_BatchHandle]] = {}

    def submit(self, job: TrainingJob) -> Handle:
        trainer = self.trainers[job.task]
        if not job.is_plain:  # other procedures (pruned, split, sized) run one by one
            return _LazyHandle(trainer, job)
        handle = _BatchHandle(self, job, trainer.num_steps(job.client, job.epochs))
        self._pending.setdefault(job.task, []).append(handle)
        return handle

    def drop(self, handle: _BatchHandle) -> None:
        queue = self._pending.get(handle.job.task, [])
        if handle in queue:
            queue.remove(handle)

    def run_pending(self, wanted: _BatchHandle) -> None:
        task = wanted.job.task
        queue, trainer = self._pending[task], self.trainers[task]
        low, high = wanted.steps / STEP_SPREAD, wanted.steps * STEP_SPREAD
        peers = [h for h in queue if h is not wanted and low <= h.steps <= high]
        group = [wanted, *peers[: self.max_batch - 1]]
        if len(group) < MIN_BATCH:
            group = [wanted]
        chosen = {id(h) for h in group}
        self._pending[task] = [h for h in queue if id(h) not in chosen]
        if len(group) == 1:
            wanted.update = run_job(trainer, wanted.job)
            return
        jobs = [
            (h.job.client, h.job.base_version, h.job.start, h.job.dispatch, h.job.epochs)
            for h in group
        ]
        for h, update in zip(group, trainer.train_many(jobs), strict=True):
            h.update = update

    def flush(self) -> None:
        pass  # lazy: a batch trains when one of its results is asked for

    def close(self) -> None:
        self._pending.clear()

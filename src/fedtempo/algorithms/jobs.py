"""A client training as data (``TrainingJob``) and the one function every executor runs on it.

An algorithm says *what* a client trains (start vector, version, procedure options); a driver
decides *when* and hands the job to an executor (inline, a process pool, Ray, or a party over the
network). ``run_job`` is the same everywhere, so the result never depends on where it ran.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from fedtempo.client.local import LocalSpec, Update, train_local
from fedtempo.client.trainer import ClientTrainer
from fedtempo.personalize.training import train_personalized
from fedtempo.split.training import train_split


@dataclass(frozen=True)
class TrainingJob:
    """One client training of ``task`` from ``start`` (the model of ``base_version``).

    ``dispatch`` numbers the client's trainings of the task (0, 1, 2 ...): retraining from the
    same version draws fresh batches. Procedure options, None = the task's default:
    ``epochs`` (AsyncFedED's adaptive K), ``iterations`` and ``batch_size`` (MA-FL's gamma and
    B), ``prune_ratio`` (pruned, personalized training at ratio rho; the trainer's
    ``personal`` setup), ``cut`` (split training with blocks 1..cut on the device; the
    trainer's ``blocks``).
    """

    task: int
    client: int
    base_version: int
    start: torch.Tensor
    dispatch: int = 0
    epochs: int | None = None
    iterations: int | None = None
    batch_size: int | None = None
    prune_ratio: float | None = None
    cut: int | None = None

    @property
    def is_plain(self) -> bool:
        """Plain local training with the task's own spec (what batched training can fuse)."""
        return (self.iterations, self.batch_size, self.prune_ratio, self.cut) == (None,) * 4


def job_spec(spec: LocalSpec, job: TrainingJob) -> LocalSpec:
    """The task's spec with the job's iterations and batch size laid over it."""
    changes: dict[str, int] = {}
    if job.iterations is not None:
        changes["iterations"] = job.iterations
    if job.batch_size is not None:
        changes["batch_size"] = job.batch_size
    return dataclasses.replace(spec, **changes) if changes else spec


def run_job(trainer: ClientTrainer, job: TrainingJob) -> Update:
    """Run ``job`` on ``trainer``: what every executor does, wherever it runs."""
    if job.is_plain:
        return trainer.train(job.client, job.base_version, job.start, job.dispatch, job.epochs)
    spec = job_spec(trainer.spec, job)
    x, y = trainer.data(job.client)
    gen = trainer.generator(job.client, job.base_version, job.dispatch)
    keep = None
    if job.cut is not None:
        if trainer.blocks is None:
            raise ValueError(f"task {job.task}: split training needs the model's blocks")
        delta, steps, loss = train_split(trainer.blocks, job.cut, job.start, x, y, spec, gen)
    elif job.prune_ratio is not None:
        setup = trainer.personal
        if setup is None:
            raise ValueError(f"task {job.task}: pruned training needs a personal setup")
        res = train_personalized(
            trainer.model, job.start, setup.mask, job.prune_ratio, x, y, setup.spec, spec, gen
        )
        delta, steps, loss = res.vector - job.start, res.steps, res.loss
        keep = torch.zeros_like(setup.mask)  # kept global entries; the personal part stays home
        keep[~setup.mask] = res.keep
    else:
        delta, steps, loss = train_local(trainer.model, job.start, x, y, spec, gen, job.epochs)
    n = trainer.num_samples(job.client)
    return Update(job.client, job.task, job.base_version, delta, n, steps, loss, keep=keep)

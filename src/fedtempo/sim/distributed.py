"""A Ray executor: client trainings as tasks of Ray actors, on a local or remote Ray cluster.

Each of ``workers`` actors receives the tasks' ClientTrainers once (so it holds its own private
model workspace and a copy of the data); a training job is sent to the actors in turn. Results
are bit-identical to ``InlineExecutor`` with ``threads = 1``: an actor runs the same
``ClientTrainer.train`` with one torch thread.

Optional: ``pip install 'fedtempo[ray]'``. ``address=None`` starts a local Ray with ``workers``
CPUs; ``address="ray://head:10001"`` (or ``"auto"``) joins an existing cluster.
"""

from __future__ import annotations

from typing import Any

from fedtempo.algorithms.jobs import TrainingJob, run_job
from fedtempo.client.local import Update
from fedtempo.client.trainer import ClientTrainer
from fedtempo.errors import ConfigError
from fedtempo.sim.executor import EvaluatesHere, Handle


class _TrainerActor:
    def __init__(self, trainers: dict[int, ClientTrainer]) -> None:
        import torch

        torch.set_num_threads(1)
        self.trainers = trainers

    def train(self, job: TrainingJob) -> Update:
        return run_job(self.trainers[job.task], job)


class _RayHandle:
    def __init__(self, ref: Any) -> None:
        self._ref = ref

    def result(self) -> Update:
        import ray

        out: Update = ray.get(self._ref)
        return out

    def cancel(self) -> None:
        pass  # an actor task already queued runs anyway; its result is dropped


class RayExecutor(EvaluatesHere):
    def __init__(
        self, trainers: dict[int, ClientTrainer], workers: int = 2, address: str | None = None
    ) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("executor: 'ray' needs Ray: pip install 'fedtempo[ray]'") from None
        self._started = not ray.is_initialized()
        if self._started:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address is None:
                kwargs["num_cpus"] = workers
            ray.init(address=address, **kwargs)
        actor: Any = ray.remote(num_cpus=1)(_TrainerActor)
        shared = ray.put(trainers)
        self._actors: list[Any] = [actor.remote(shared) for _ in range(workers)]
        self._next = 0

    def submit(self, job: TrainingJob) -> Handle:
        actor = self._actors[self._next % len(self._actors)]
        self._next += 1
        return _RayHandle(actor.train.remote(job))

    def flush(self) -> None:
        pass  # each training is sent to an actor as it is submitted

    def close(self) -> None:
        import ray

        for a in self._actors:
            ray.kill(a)
        if self._started:
            ray.shutdown()

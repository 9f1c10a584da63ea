"""What every kind of run builds the same way: a task's data and partition, its evaluator, the
executor, and ``Built``, what a build returns."""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedtempo.algorithms.protocol import RoundAlgorithm
from fedtempo.algorithms.pruned import PrunedRounds
from fedtempo.algorithms.splitfed import SplitFedRounds
from fedtempo.client.local import HeldOut, LocalSpec
from fedtempo.client.trainer import ClientTrainer
from fedtempo.data import partition as part
from fedtempo.data.datasets import ArrayDataset, DataBundle, load_digits, load_idx_pair
from fedtempo.data.synthetic import leaf_synthetic
from fedtempo.errors import ConfigError
from fedtempo.experiment.config import ExperimentConfig
from fedtempo.experiment.servers import AsyncConfig, MaflServer, RoundsConfig
from fedtempo.models.profile import build_model
from fedtempo.rng import Streams
from fedtempo.sim.asyncserver import AsyncServer
from fedtempo.sim.engine import Simulation
from fedtempo.sim.executor import BatchingExecutor, Executor, InlineExecutor
from fedtempo.sim.parallel import ProcessExecutor, WorkerPool
from fedtempo.sim.rounds import RoundDriver
from fedtempo.sim.task import SimTask
from fedtempo.system.population import Population

SAMPLE_BYTES = 60 * 4 + 8 + 8  # a Synthetic sample up front: features, label, index into the set


def synthetic_up_front_bytes(config: ExperimentConfig) -> float:
    """What generating every Synthetic device up front holds in memory (the expected count of a
    floor(lognormal) + min_size device, times the bytes of a sample)."""
    s = config.data.synthetic
    per_device = math.exp(s.size_mean + s.size_sigma**2 / 2) + s.min_size
    return config.partition.num_clients * per_device * SAMPLE_BYTES


def _memory_bytes() -> float:
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _check_fits(config: ExperimentConfig) -> None:
    need, have = synthetic_up_front_bytes(config), _memory_bytes()
    if need > have / 2:
        raise ConfigError(
            f"data.synthetic.lazy: generating {config.partition.num_clients:,} devices up front "
            f"needs about {need / 2**30:.1f} GiB (this machine has {have / 2**30:.1f} GiB); "
            "set data.synthetic.lazy = true to generate each device when it trains"
        )


def load_data(config: ExperimentConfig, streams: Streams, task: int = 0) -> DataBundle:
    """Task ``task``'s data set (its generated data from the stream ("data", task)). Raises
    ConfigError when Synthetic up front would not fit in memory."""
    d = config.data
    if d.dataset == "digits":
        return load_digits(d.test_fraction, streams.numpy("data", task))
    if d.dataset == "synthetic":
        _check_fits(config)
        s = d.synthetic
        return leaf_synthetic(
            s.alpha,
            s.beta,
            config.partition.num_clients,
            streams.numpy("data", task),
            size_mean=s.size_mean,
            size_sigma=s.size_sigma,
            min_size=s.min_size,
            test_fraction=d.test_fraction,
        )
    return load_idx_pair(d.dataset, Path(d.root) if d.root else None)


def partition_seed(config: ExperimentConfig, streams: Streams, task: int) -> int:
    """The Dirichlet split's integer seed: ``partition.seed``, else the run's seed for task 0
    (so a one-task MA-FL run partitions like a single-model run), else one drawn from the
    stream ("partition-seed", task)."""
    if config.partition.seed is not None:
        return config.partition.seed
    if task == 0:
        return config.seed
    return int(streams.numpy("partition-seed", task).integers(2**62))


def make_partition(
    config: ExperimentConfig, bundle: DataBundle, streams: Streams, task: int = 0
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-client (train, personal test) index arrays into ``bundle.train``; task ``task``'s
    random streams are keyed by its id."""
    p = config.partition
    labels = bundle.train.y.numpy()
    rng = streams.numpy("partition", task)
    if p.scheme == "natural":
        parts = list(bundle.natural_train)
    elif p.scheme == "iid":
        parts = part.iid(len(labels), p.num_clients, rng)
    elif p.scheme == "dirichlet":
        parts = part.dirichlet(
            labels, p.num_clients, p.alpha, partition_seed(config, streams, task)
        )
    elif p.scheme == "shards":
        parts = part.shards(labels, p.num_clients, p.shards_per_client, rng)
    else:
        parts = part.power_law(len(labels), p.num_clients, p.sigma, rng)
    return part.split_clients(parts, p.client_test_fraction, streams.numpy("client-test", task))


def local_spec(config: ExperimentConfig) -> LocalSpec:
    """The local procedure of ``[train]`` (with the algorithm's proximal term, if any)."""
    t = config.train
    return LocalSpec(
        epochs=t.epochs,
        iterations=t.iterations,
        batch_size=t.batch_size,
        lr=t.lr,
        momentum=t.momentum,
        weight_decay=t.weight_decay,
        prox_mu=config.server.client_prox,
    )


def initial_model(
    config: ExperimentConfig, input_shape: tuple[int, ...], num_classes: int
) -> torch.nn.Module:
    """The config's model with its initial weights (the stream ("init", 0))."""
    return build_model(
        config.model.name, input_shape, num_classes, Streams(config.seed).torch("init", 0)
    )


def test_evaluator(model: torch.nn.Module, test: ArrayDataset) -> HeldOut:
    """(accuracy, loss) of a flat parameter vector on ``test``, in a copy of ``model``."""
    return HeldOut(copy.deepcopy(model), test.x, test.y)


BATCH_BELOW_FLOPS = 1e5  # train FLOPs/sample under which batching clients paid (W-sim notes)
HOST_FLOPS = 1e10  # FLOP/s of one core training a small model (W-sim: ~1.5e10); a planning figure
POOL_PAYS_S = 30.0  # estimated inline training seconds from which a pool pays for its start-up


def _batches_clients(config: ExperimentConfig, train_flops: int) -> bool:
    """Whether inline training batches the pending clients with vmap (on, or auto and tiny)."""
    auto = config.batch_clients == "auto" and train_flops < BATCH_BELOW_FLOPS
    return config.batch_clients == "on" or auto


def planned_trainings(config: ExperimentConfig) -> int | None:
    """How many client trainings the run will do, as far as the config says (None: it runs
    until ``stop.virtual_time``, unknown in advance)."""
    s = config.server
    if isinstance(s, MaflServer):
        return config.mafl.rounds * config.mafl.channels
    if isinstance(s, RoundsConfig):
        return s.rounds * s.clients_per_round
    return s.max_updates if isinstance(s, AsyncConfig) else None


def _samples_per_training(config: ExperimentConfig, trainers: dict[int, ClientTrainer]) -> float:
    if isinstance(config.server, MaflServer):
        return float(config.mafl.iterations * config.mafl.batch)
    trainer = next(iter(trainers.values()))
    some = range(min(trainer.num_clients, 1000))  # a lazy source: a sample of its clients
    steps = [trainer.num_steps(c) for c in some]
    return float(np.mean(steps)) * trainer.spec.batch_size if steps else 0.0


def resolve_executor(
    config: ExperimentConfig, trainers: dict[int, ClientTrainer], train_flops: int
) -> tuple[str, int]:
    """(executor, workers) with "auto" resolved. ``workers = "auto"``: the cores this process
    may use. ``executor = "auto"``: a process pool when it gives the same bits as inline (one
    torch thread, no vmap batching), there are cores to share, and the trainings the config
    plans would take long enough inline (``POOL_PAYS_S`` at ``HOST_FLOPS``) to pay for the
    pool's start-up; else inline."""
    cores = len(os.sched_getaffinity(0))
    workers = cores if config.workers == "auto" else config.workers
    if config.executor != "auto":
        return config.executor, workers
    trainings = planned_trainings(config)
    other_bits = _batches_clients(config, train_flops) or config.threads != 1
    if other_bits or workers < 2 or trainings is None:
        return "inline", workers
    seconds = trainings * _samples_per_training(config, trainers) * train_flops / HOST_FLOPS
    return ("process" if seconds >= POOL_PAYS_S else "inline"), workers


def early_pool(config: ExperimentConfig) -> WorkerPool | None:
    """A config that asks for a process pool by name gets its workers started before its data
    loads (their start-up overlaps the loading); "auto" decides once the data is there."""
    if config.executor != "process":
        return None
    return WorkerPool(resolve_executor(config, {}, 0)[1])


def make_executor(
    config: ExperimentConfig,
    trainers: dict[int, ClientTrainer],
    train_flops: int,
    pool: WorkerPool | None = None,
    held_out: dict[int, HeldOut] | None = None,
) -> Executor:
    """inline (lazy, in this thread; clients batched with vmap when ``batch_clients`` is on, or
    auto and the model is tiny), process (a local pool: ``pool`` if one was started early; it
    may evaluate on the tasks' ``held_out`` sets), ray (local or remote cluster), or auto
    (``resolve_executor``)."""
    kind, workers = resolve_executor(config, trainers, train_flops)
    if kind == "inline" and _batches_clients(config, train_flops):
        return BatchingExecutor(trainers)
    if kind == "process":
        return ProcessExecutor(trainers, workers, pool, held_out)
    if kind == "ray":
        from fedtempo.sim.distributed import RayExecutor

        return RayExecutor(trainers, workers, config.ray_address)
    return InlineExecutor(trainers)


@dataclass(frozen=True)
class Built:
    """A simulation ready to run: its tasks (one for a single-model run), the population, the
    driver, and per device its training samples (over all tasks) and personal test samples."""

    simulation: Simulation
    tasks: list[SimTask]
    population: Population
    train_sizes: np.ndarray
    test_sizes: np.ndarray
    driver: RoundDriver | AsyncServer  # a round driver's state holds the per-round logs
    scheduler: Any = None  # MA-FL's scheduler (the optimiser keeps its plan log)

    @property
    def task(self) -> SimTask:
        """The task of a single-model run (the first of several)."""
        return self.tasks[0]

    @property
    def algorithm(self) -> RoundAlgorithm[Any] | None:
        """The round algorithm of a synchronous run (None for an asynchronous one)."""
        return self.driver.algorithm if isinstance(self.driver, RoundDriver) else None

    @property
    def pruned(self) -> PrunedRounds | None:
        return self.algorithm if isinstance(self.algorithm, PrunedRounds) else None

    @property
    def split(self) -> SplitFedRounds | None:
        return self.algorithm if isinstance(self.algorithm, SplitFedRounds) else None

    @property
    def rounds(self) -> RoundDriver:
        """The round driver of a synchronous run."""
        assert isinstance(self.driver, RoundDriver), "not a synchronous run"
        return self.driver

"""build(config) -> a ready Simulation: data, partition, model, devices, trainer, server."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simpy
import torch

from fedtempo.aggregation.sync import FedAvg
from fedtempo.client.local import LocalSpec, evaluate
from fedtempo.client.trainer import ClientTrainer
from fedtempo.data import partition as part
from fedtempo.data.datasets import DataBundle, load_digits, load_idx_pair
from fedtempo.data.synthetic import leaf_synthetic
from fedtempo.experiment.config import ExperimentConfig
from fedtempo.experiment.population import build_population
from fedtempo.models.profile import build_model, profile_model
from fedtempo.params import flatten
from fedtempo.rng import Streams
from fedtempo.sim.engine import Simulation
from fedtempo.sim.executor import InlineExecutor
from fedtempo.sim.recorder import Recorder
from fedtempo.sim.session import Runtime
from fedtempo.sim.sync import SyncServer
from fedtempo.sim.task import GlobalModel, SimTask
from fedtempo.sim.uplink import SharedUplink
from fedtempo.system.population import Population


@dataclass(frozen=True)
class Built:
    """A simulation ready to run, with the population it was built on."""

    simulation: Simulation
    task: SimTask
    population: Population
    client_train: list[np.ndarray]
    client_test: list[np.ndarray]


def load_data(config: ExperimentConfig, streams: Streams) -> DataBundle:
    d = config.data
    if d.dataset == "digits":
        return load_digits(d.test_fraction, streams.numpy("data", 0))
    if d.dataset == "synthetic":
        s = d.synthetic
        return leaf_synthetic(
            s.alpha,
            s.beta,
            config.partition.num_clients,
            streams.numpy("data", 0),
            size_mean=s.size_mean,
            size_sigma=s.size_sigma,
            min_size=s.min_size,
            test_fraction=d.test_fraction,
        )
    return load_idx_pair(d.dataset, Path(d.root) if d.root else None)


def make_partition(
    config: ExperimentConfig, bundle: DataBundle, streams: Streams
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-client (train, personal test) index arrays into ``bundle.train``."""
    p = config.partition
    labels = bundle.train.y.numpy()
    seed = config.seed if p.seed is None else p.seed
    rng = streams.numpy("partition", 0)
    if p.scheme == "natural":
        parts = list(bundle.natural_train)
    elif p.scheme == "iid":
        parts = part.iid(len(labels), p.num_clients, rng)
    elif p.scheme == "dirichlet":
        parts = part.dirichlet(labels, p.num_clients, p.alpha, seed)
    elif p.scheme == "shards":
        parts = part.shards(labels, p.num_clients, p.shards_per_client, rng)
    else:
        parts = part.power_law(len(labels), p.num_clients, p.sigma, rng)
    return part.split_clients(parts, p.client_test_fraction, streams.numpy("client-test", 0))


def _evaluator(
    model: torch.nn.Module, bundle: DataBundle
) -> Callable[[torch.Tensor], tuple[float, float]]:
    workspace = copy.deepcopy(model)
    x, y = bundle.test.x, bundle.test.y
    return lambda params: evaluate(workspace, params, x, y)


def build(config: ExperimentConfig, recorder: Recorder) -> Built:
    """Assemble the simulation described by ``config``. Raises FedTempoError on bad input."""
    torch.set_num_threads(config.threads)
    streams = Streams(config.seed)
    bundle = load_data(config, streams)
    client_train, client_test = make_partition(config, bundle, streams)
    model = build_model(
        config.model.name,
        bundle.train.input_shape,
        bundle.train.num_classes,
        streams.torch("init", 0),
    )
    profile = profile_model(config.model.name, model, bundle.train.input_shape)
    t = config.train
    spec = LocalSpec(
        epochs=t.epochs,
        iterations=t.iterations,
        batch_size=t.batch_size,
        lr=t.lr,
        momentum=t.momentum,
        weight_decay=t.weight_decay,
        prox_mu=config.server.mu if config.server.algorithm == "fedprox" else 0.0,
    )
    trainer = ClientTrainer(0, model, bundle.train.x, bundle.train.y, client_train, spec, streams)
    task = SimTask(
        0, config.name, trainer, profile, GlobalModel(flatten(model)), _evaluator(model, bundle)
    )
    population = build_population(config.devices, len(client_train), streams)
    executor = InlineExecutor({0: trainer})
    env = simpy.Environment()
    uplink = SharedUplink(env, population.uplink) if config.devices.shared_uplink else None
    rt = Runtime(env, population, executor, recorder, streams, uplink)
    s = config.server

    def server(env: simpy.Environment, t: SimTask):  # type: ignore[no-untyped-def]
        return SyncServer(
            rt,
            t,
            rule=FedAvg(s.server_lr),
            clients_per_round=s.clients_per_round,
            rounds=s.rounds,
            deadline=s.deadline,
        ).run()

    sim = Simulation(
        [task],
        [server],
        executor,
        recorder,
        eval_interval=config.eval.interval,
        time_limit=config.stop.virtual_time,
        env=env,
    )
    return Built(sim, task, population, client_train, client_test)

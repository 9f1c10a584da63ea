"""build(config) -> a ready Simulation: data, partition, model, devices, trainer, server."""

from __future__ import annotations

import simpy
import torch

from fedtempo.client.trainer import ClientTrainer
from fedtempo.experiment.config import ExperimentConfig
from fedtempo.experiment.drivers import Parts, setup
from fedtempo.experiment.parts import (
    Built,
    early_pool,
    initial_model,
    load_data,
    local_spec,
    make_executor,
    make_partition,
    test_evaluator,
)
from fedtempo.experiment.taskdata import task_data

__all__ = ["Built", "build", "load_data", "make_executor", "make_partition"]
from fedtempo.experiment.population import build_population
from fedtempo.experiment.servers import MaflServer
from fedtempo.models.profile import profile_model
from fedtempo.params import flatten
from fedtempo.rng import Streams
from fedtempo.sim.engine import ServerFactory, Simulation
from fedtempo.sim.parallel import WorkerPool
from fedtempo.sim.recorder import Recorder
from fedtempo.sim.task import GlobalModel, SimTask
from fedtempo.sim.timeline import Runtime
from fedtempo.sim.uplink import SharedUplink


def build(config: ExperimentConfig, recorder: Recorder) -> Built:
    """Assemble the simulation described by ``config`` (several tasks for MA-FL, one for the
    rest). Raises FedTempoError on bad input."""
    if isinstance(config.server, MaflServer):
        from fedtempo.experiment.multibuild import build_multitask  # CVXPY: only when needed

        return build_multitask(config, recorder)
    torch.set_num_threads(config.threads)
    pool = early_pool(config)
    try:
        return _build(config, recorder, pool)
    except BaseException:
        if pool is not None:
            pool.close()
        raise


def _build(config: ExperimentConfig, recorder: Recorder, pool: WorkerPool | None) -> Built:
    streams = Streams(config.seed)
    data = task_data(config, streams)
    model = initial_model(config, data.input_shape, data.num_classes)
    profile = profile_model(config.model.name, model, data.input_shape)
    trainer = ClientTrainer.over(0, model, data.clients, local_spec(config), streams)
    evaluate = test_evaluator(model, data.test)
    task = SimTask(0, config.name, trainer, profile, GlobalModel(flatten(model)), evaluate)
    population = build_population(config.devices, len(data.train_sizes), streams)
    make_driver = setup(Parts(config, task, data, population, streams))
    # after the setup has prepared the trainer: a process pool ships it to its workers once
    executor = make_executor(config, {0: trainer}, profile.train_flops, pool, {0: evaluate})
    env = simpy.Environment()
    uplink = SharedUplink(env, population.uplink) if config.devices.shared_uplink else None
    driver = make_driver(Runtime(env, population, executor, recorder, streams, uplink))
    server: ServerFactory = lambda env, task: driver.run()  # noqa: E731
    sim = Simulation(
        [task],
        [server],
        executor,
        recorder,
        eval_interval=config.eval.interval,
        time_limit=config.stop.virtual_time,
        env=env,
    )
    return Built(sim, [task], population, data.train_sizes, data.test_sizes, driver)

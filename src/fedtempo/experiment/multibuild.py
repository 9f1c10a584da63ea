"""build for multi-model (MA-FL) runs: one SimTask per [[tasks]] entry, shared devices."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import simpy
import torch

from fedtempo.aggregation.sync import FedAvg
from fedtempo.algorithms.mafl import MaflRounds, MaflSettings
from fedtempo.client.local import HeldOut, LocalSpec, Update, train_local
from fedtempo.client.trainer import ClientTrainer
from fedtempo.experiment.config import ExperimentConfig, MaflConfig, TaskConfig
from fedtempo.experiment.parts import (
    Built,
    load_data,
    make_executor,
    make_partition,
    test_evaluator,
)
from fedtempo.experiment.population import build_population
from fedtempo.models.profile import build_model, profile_model
from fedtempo.multitask.calibration import Calibration
from fedtempo.multitask.optimised import Mode, Physics, SCAScheduler
from fedtempo.multitask.probes import Prober, ProbeSettings
from fedtempo.multitask.schedule import Schedule
from fedtempo.multitask.schedulers import (
    PlanContext,
    async_random,
    costly_devices,
    round_robin,
)
from fedtempo.params import flatten
from fedtempo.rng import Streams
from fedtempo.sim.engine import Simulation
from fedtempo.sim.recorder import Recorder
from fedtempo.sim.rounds import RoundDriver
from fedtempo.sim.task import GlobalModel, SimTask
from fedtempo.sim.timeline import Runtime
from fedtempo.sim.uplink import SharedUplink
from fedtempo.system.population import Population


def _task(
    config: ExperimentConfig, tc: TaskConfig, m: int, streams: Streams
) -> tuple[SimTask, list[float]]:
    """Task m's SimTask (its client indices laid on the device ids) and its initial vector."""
    view = config.model_copy(update={"data": tc.data, "partition": tc.partition, "model": tc.model})
    bundle = load_data(view, streams, m)
    parts, _ = make_partition(view, bundle, streams, m)
    ids = tc.devices if tc.devices is not None else list(range(tc.partition.num_clients))
    indices = [np.zeros(0, dtype=np.int64) for _ in range(config.mafl.devices)]
    for d, idx in zip(ids, parts, strict=True):
        indices[d] = idx
    shape, classes = bundle.train.input_shape, bundle.train.num_classes
    model = build_model(tc.model.name, shape, classes, streams.torch("init", m))
    profile = profile_model(tc.model.name, model, shape)
    mc = config.mafl
    spec = LocalSpec(iterations=mc.iterations, batch_size=mc.batch, lr=tc.lr)
    trainer = ClientTrainer(m, model, bundle.train.x, bundle.train.y, indices, spec, streams)
    params = warm_start(trainer, flatten(model), tc.warm_rounds, streams)
    evaluate = test_evaluator(model, bundle.test)
    task = SimTask(m, tc.name, trainer, profile, GlobalModel(params), evaluate)
    return task, [float(trainer.num_samples(c)) for c in range(config.mafl.devices)]


def warm_start(
    trainer: ClientTrainer, params: torch.Tensor, rounds: int, streams: Streams
) -> torch.Tensor:
    """``rounds`` FedAvg rounds over every device holding the task's data, off the clock (a
    pre-trained, warm model); batches from their own streams ("warm", task, client, round)."""
    rule = FedAvg()
    for r in range(rounds):
        updates = []
        for c in trainer.clients_with_data():
            x, y = trainer.data(c)
            gen = streams.torch("warm", trainer.task, c, r)
            delta, steps, loss = train_local(trainer.model, params, x, y, trainer.spec, gen)
            updates.append(Update(c, trainer.task, r, delta, len(y), steps, loss))
        params = rule.aggregate(params, updates)
    return params


def physics(tasks: list[SimTask], samples: np.ndarray, pop: Population, round_s: float) -> Physics:
    """Planning values: mean link rates, each device's transmit power."""
    n = samples.shape[0]
    bits = np.array([float(t.profile.size_bits) for t in tasks])
    up = np.array([pop.uplink.mean_rate_bps(d) for d in range(n)])
    down = np.array([pop.downlink.mean_rate_bps(d) for d in range(n)])
    up_s = bits[None, :] / up[:, None]
    return Physics(
        samples=samples,
        train_flops=np.array([float(t.profile.train_flops) for t in tasks]),
        speed=np.asarray(pop.compute.flops_per_s, dtype=np.float64),
        kappa=pop.compute.kappa,
        upload_j=pop.tx_power_w[:, None] * up_s,
        comm_s=up_s + bits[None, :] / down[:, None],
        round_s=round_s,
    )


MODES: dict[str, Mode] = {"sca": "joint", "sca-schedule": "schedule", "sca-sizing": "sizing"}


def spare(mc: MaflConfig, ph: Physics) -> np.ndarray | None:
    """The (device, model) pairs no session may train (``mafl.spare_devices``; None: none)."""
    if mc.spare_devices == 0:
        return None
    return costly_devices(ph.speed, ph.train_flops, mc.spare_devices, mc.spare_models)


def drift_horizon(mc: MaflConfig) -> float:
    """The least drift horizon gamma0 the optimiser plans with (``mafl.drift_horizon_min``)."""
    return float(mc.iterations if mc.drift_horizon_min is None else mc.drift_horizon_min)


def replayed_sessions(mc: MaflConfig, models: int) -> int:
    """Sessions per model the multi-round drift probe replays: as many as the run gives each
    model (rounds x channels / models, at least 1); 0 where that probe is off."""
    if mc.drift_probe != "sessions":
        return 0
    return max(1, mc.rounds * mc.channels // models)


def scheduler(
    mc: MaflConfig, ph: Physics, streams: Streams, spared: np.ndarray | None = None
) -> Callable[[PlanContext], Schedule]:
    if mc.scheduler == "round-robin":
        return partial(round_robin, spare=spared)
    if mc.scheduler == "async-random":
        return lambda ctx: async_random(ctx, streams.numpy("mafl-schedule", ctx.first_round))
    return SCAScheduler(
        ph,
        mc.beta_e,
        max_iterations=mc.max_iterations,
        min_iterations=mc.min_iterations,
        batch_range=mc.batch_range,
        energy_budget=mc.energy_budget,
        min_sessions=mc.min_sessions,
        mode=MODES[mc.scheduler],
        participation=mc.participation,
        work_visits=mc.work_visits,
        calibration=Calibration() if mc.calibrate else None,
        drift_horizon_min=drift_horizon(mc),
        model_share=mc.model_share,
        spare=spared,
        balance=mc.balance_weight,
    )


def build_multitask(config: ExperimentConfig, recorder: Recorder) -> Built:
    """Assemble an MA-FL run. Raises FedTempoError on bad input."""
    torch.set_num_threads(config.threads)
    streams = Streams(config.seed)
    mc = config.mafl
    built = [_task(config, tc, m, streams) for m, tc in enumerate(config.tasks)]
    tasks = [t for t, _ in built]
    samples = np.array([s for _, s in built], dtype=np.float64).T
    population = build_population(config.devices, mc.devices, streams)
    ph = physics(tasks, samples, population, mc.round_s)
    settings = MaflSettings(
        round_s=mc.round_s,
        rounds=mc.rounds,
        channels=mc.channels,
        horizon=mc.horizon,
        step=mc.step,
        iterations=mc.iterations,
        batch=mc.batch,
        server_lr=mc.server_lr,
        warmup_rounds=mc.warmup_rounds,
        memory_rounds=mc.memory_rounds,
        normalise_steps=mc.normalise_steps,
    )
    spared = spare(mc, ph)
    chosen = scheduler(mc, ph, streams, spared)
    weights = [tc.weight for tc in config.tasks]
    probes = ProbeSettings(
        mc.batch,
        curved_noise=mc.batch_noise == "curvature",
        held_out=mc.drift_probe == "held-out",
        local_steps_min=drift_horizon(mc),
        sessions=replayed_sessions(mc, len(tasks)),
    )
    prober = Prober([t.trainer for t in tasks], samples, weights, probes, streams, mc.relative_gap)
    warmup = partial(round_robin, spare=spared)
    workloads = [t.workload() for t in tasks]
    algorithm = MaflRounds(settings, chosen, ph, workloads, prober, warmup)
    # every training goes through the executor; the pool gets the trainers once
    trainers = {t.task: t.trainer for t in tasks}
    flops = min(t.profile.train_flops for t in tasks)
    held_out = {t.task: t.evaluate for t in tasks if isinstance(t.evaluate, HeldOut)}
    executor = make_executor(config, trainers, flops, held_out=held_out)
    env = simpy.Environment()
    uplink = SharedUplink(env, population.uplink) if config.devices.shared_uplink else None
    rt = Runtime(env, population, executor, recorder, streams, uplink)
    driver = RoundDriver(rt, tasks, algorithm, rounds=mc.rounds, clients_per_round=None)
    sim = Simulation(
        tasks,
        [lambda env, task: driver.run()],
        executor,
        recorder,
        eval_interval=config.eval.interval,
        time_limit=config.stop.virtual_time,
        env=env,
    )
    sizes = samples.sum(axis=1).astype(np.int64)
    no_tests = np.zeros(mc.devices, dtype=np.int64)
    return Built(sim, tasks, population, sizes, no_tests, driver, chosen)

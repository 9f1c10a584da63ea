"""build(config) -> a ready Simulation: data, partition, model, devices, trainer, server."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import simpy
import torch

from fedtempo.aggregation import asynchronous as agg
from fedtempo.aggregation import staleness as st
from fedtempo.aggregation.sync import FedAvg
from fedtempo.algorithms.fedavg import FedAvgRounds
from fedtempo.algorithms.protocol import RoundAlgorithm
from fedtempo.algorithms.pruned import PrunedRounds, PrunedState, personalized_evaluator
from fedtempo.algorithms.splitfed import Planner, SplitFedRounds
from fedtempo.alloc import sfl
from fedtempo.alloc.pruning import equal_share, solve_admitting
from fedtempo.client.local import LocalSpec, evaluate
from fedtempo.client.trainer import ClientTrainer, PersonalSetup
from fedtempo.data import partition as part
from fedtempo.data.datasets import DataBundle, load_digits, load_idx_pair
from fedtempo.data.synthetic import leaf_synthetic
from fedtempo.errors import ConfigError
from fedtempo.experiment.config import ExperimentConfig, ServerConfig, SplitConfig
from fedtempo.experiment.population import build_population
from fedtempo.models.profile import build_model, profile_model
from fedtempo.params import flatten
from fedtempo.personalize.masks import last_layer, personal_mask
from fedtempo.rng import Streams
from fedtempo.sim.asyncserver import AdaptiveEpochs, AsyncServer
from fedtempo.sim.engine import ServerFactory, Simulation
from fedtempo.sim.executor import BatchingExecutor, Executor, InlineExecutor
from fedtempo.sim.parallel import ProcessExecutor
from fedtempo.sim.recorder import Recorder
from fedtempo.sim.rounds import RoundDriver
from fedtempo.sim.task import GlobalModel, SimTask
from fedtempo.sim.timeline import Runtime
from fedtempo.sim.uplink import SharedUplink
from fedtempo.split.models import splittable
from fedtempo.split.profile import profile_cuts
from fedtempo.system.links import WirelessLink
from fedtempo.system.population import Population


@dataclass(frozen=True)
class Built:
    """A simulation ready to run, with the population it was built on."""

    simulation: Simulation
    task: SimTask
    population: Population
    train_sizes: np.ndarray
    client_test: list[np.ndarray]
    driver: RoundDriver | AsyncServer | None = None  # its state holds the per-round logs
    algorithm: RoundAlgorithm[Any] | None = None  # the round algorithm of a synchronous run

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


def load_data(config: ExperimentConfig, streams: Streams, task: int = 0) -> DataBundle:
    """Task ``task``'s data set (its generated data from the stream ("data", task))."""
    d = config.data
    if d.dataset == "digits":
        return load_digits(d.test_fraction, streams.numpy("data", task))
    if d.dataset == "synthetic":
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


def _evaluator(
    model: torch.nn.Module, bundle: DataBundle
) -> Callable[[torch.Tensor], tuple[float, float]]:
    workspace = copy.deepcopy(model)
    x, y = bundle.test.x, bundle.test.y
    return lambda params: evaluate(workspace, params, x, y)


def async_rule(s: ServerConfig) -> agg.AsyncAggregator:
    """The composed asynchronous rule named by ``s.algorithm``."""
    if s.algorithm == "fedasync":
        f = s.fedasync
        weights: dict[str, st.StalenessWeight] = {
            "constant": st.Constant(),
            "polynomial": st.Polynomial(f.poly_a),
            "hinge": st.Hinge(f.hinge_a, f.hinge_b),
        }
        weight: st.StalenessWeight = weights[f.staleness]
        return agg.AsyncAggregator(weight, agg.MixStep(f.alpha))
    if s.algorithm == "fedbuff":
        b = s.fedbuff
        weight = st.InverseSqrt() if b.staleness_weight else st.Constant()
        return agg.AsyncAggregator(weight, agg.BufferStep(b.buffer_size, b.server_lr, b.by_samples))
    e = s.asyncfeded
    return agg.AsyncAggregator(st.Euclidean(e.lam, e.epsilon), agg.DeltaStep(1.0))


def async_driver(s: ServerConfig, rt: Runtime, task: SimTask) -> AsyncServer:
    """The asynchronous driver of the configured rule."""
    e = s.asyncfeded
    epochs = (
        AdaptiveEpochs(e.kappa, e.gamma_bar, e.k_init, e.k_max)
        if s.algorithm == "asyncfeded"
        else None
    )
    return AsyncServer(
        rt,
        task,
        rule=async_rule(s),
        concurrency=s.concurrency,
        max_updates=s.max_updates,
        dispatch=s.dispatch,
        epochs=epochs,
    )


def server_factory(s: ServerConfig, rt: Runtime) -> ServerFactory:
    """The server process of an asynchronous rule or of FedAvg/FedProx rounds."""
    if s.is_async:
        return lambda env, task: async_driver(s, rt, task).run()
    return lambda env, task: RoundDriver(
        rt,
        [task],
        FedAvgRounds(FedAvg(s.server_lr), task.workload()),
        rounds=s.rounds,
        clients_per_round=s.clients_per_round,
        deadline=s.deadline,
    ).run()


def client_prox(s: ServerConfig) -> float:
    """The proximal coefficient of the clients' objective: FedProx mu, FedAsync rho."""
    if s.algorithm == "fedprox":
        return s.mu
    if s.algorithm == "fedasync":
        return s.fedasync.rho
    return 0.0


BATCH_BELOW_FLOPS = 1e5  # train FLOPs/sample under which batching clients paid (W-sim notes)


def make_executor(
    config: ExperimentConfig, trainers: dict[int, ClientTrainer], train_flops: int
) -> Executor:
    """inline (lazy, in this thread; clients batched with vmap when ``batch_clients`` is on, or
    auto and the model is tiny), process (a local pool) or ray (local or remote cluster)."""
    if config.executor == "inline":
        auto = config.batch_clients == "auto" and train_flops < BATCH_BELOW_FLOPS
        if config.batch_clients == "on" or auto:
            return BatchingExecutor(trainers)
    if config.executor == "process":
        return ProcessExecutor(trainers, config.workers)
    if config.executor == "ray":
        from fedtempo.sim.distributed import RayExecutor

        return RayExecutor(trainers, config.workers, config.ray_address)
    return InlineExecutor(trainers)


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
        prox_mu=client_prox(config.server),
    )
    trainer = ClientTrainer(0, model, bundle.train.x, bundle.train.y, client_train, spec, streams)
    task = SimTask(
        0, config.name, trainer, profile, GlobalModel(flatten(model)), _evaluator(model, bundle)
    )
    population = build_population(config.devices, len(client_train), streams)
    s = config.server
    algorithm: RoundAlgorithm[Any] | None = None
    if s.algorithm == "pruned":
        algorithm = pruned_rounds(config, task, population)
    elif s.algorithm == "splitfed":
        algorithm = splitfed_rounds(config, task, bundle.train.input_shape, population, streams)
    elif not s.is_async:
        algorithm = FedAvgRounds(FedAvg(s.server_lr), task.workload())
    # after the algorithm has set the trainer up: a process pool ships it to its workers once
    executor = make_executor(config, {0: trainer}, profile.train_flops)
    env = simpy.Environment()
    uplink = SharedUplink(env, population.uplink) if config.devices.shared_uplink else None
    rt = Runtime(env, population, executor, recorder, streams, uplink)
    driver: RoundDriver | AsyncServer
    if algorithm is None:
        driver = async_driver(s, rt, task)
    else:
        driver = RoundDriver(
            rt,
            [task],
            algorithm,
            rounds=s.rounds,
            clients_per_round=s.clients_per_round,
            deadline=s.deadline,
        )
    if isinstance(algorithm, PrunedRounds):
        held = driver
        task.evaluate = personalized_evaluator(
            lambda: _pruned_state(held),
            copy.deepcopy(model),
            bundle.train.x,
            bundle.train.y,
            client_test,
        )
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
    sizes = np.array([len(c) for c in client_train], dtype=np.int64)
    return Built(sim, task, population, sizes, client_test, driver, algorithm)


def _pruned_state(driver: RoundDriver | AsyncServer) -> PrunedState:
    assert isinstance(driver, RoundDriver) and isinstance(driver.state, PrunedState)
    return driver.state


def sfl_planner(sc: SplitConfig, num_cuts: int, streams: Streams) -> Planner:
    """The round planner a [server.split] table asks for."""
    if sc.planner == "fixed":
        if not 1 <= sc.fixed_cut <= num_cuts:
            raise ConfigError(
                f"server.split.fixed_cut: cut {sc.fixed_cut} is not a legal cut (1..{num_cuts})"
            )
        return lambda p: sfl.fixed_cut(p, sc.fixed_cut)
    if sc.planner == "random":
        rng = streams.numpy("split-random-cuts", 0)
        return lambda p: sfl.random_cuts(p, rng)
    planners: dict[str, Planner] = {
        "alternating": sfl.alternating,
        "optimal": sfl.optimal,
        "exhaustive": sfl.exhaustive,
        "plain": sfl.plain_fl,
        "equal": sfl.equal_shares,
    }
    return planners[sc.planner]


def splitfed_rounds(
    config: ExperimentConfig,
    task: SimTask,
    input_shape: tuple[int, ...],
    population: Population,
    streams: Streams,
) -> SplitFedRounds:
    """SplitFed rounds: the task's model in blocks (set on its trainer), its per-cut profile,
    the planner."""
    sc = config.server.split
    blocks = splittable(config.model.name, task.trainer.model)
    task.trainer.blocks = blocks
    profile = profile_cuts(copy.deepcopy(blocks), input_shape)
    speeds = np.asarray(population.compute.flops_per_s, dtype=np.float64)
    server_flops = sc.server_flops or sc.server_factor * float(np.median(speeds))
    return SplitFedRounds(
        task.workload(),
        profile,
        sfl_planner(sc, len(profile.names), streams),
        server_flops,
    )


def pruned_rounds(
    config: ExperimentConfig,
    task: SimTask,
    population: Population,
) -> PrunedRounds:
    """Pruned-personalized rounds; sets the personal setup on the task's trainer."""
    pc, model = config.server.pruning, task.trainer.model
    names = [last_layer(model)] if pc.personal is None else list(pc.personal)
    try:
        mask = personal_mask(model, names)
    except ValueError as exc:
        raise ConfigError(f"server.pruning.personal: {exc}") from None
    uplink = population.uplink
    assert isinstance(uplink, WirelessLink)  # the config requires a wireless uplink
    fixed = pc.ratio
    policy = solve_admitting if pc.policy == "kkt" else lambda p: (equal_share(p, fixed), [])
    personal_spec = task.trainer.spec
    if pc.personal_iterations:
        personal_spec = dataclasses.replace(personal_spec, iterations=pc.personal_iterations)
    task.trainer.personal = PersonalSetup(mask, personal_spec)
    return PrunedRounds(
        task.workload(),
        mask,
        personal_spec,
        uplink,
        policy,
        bandwidth_hz=pc.bandwidth_hz,
        rho_max=pc.rho_max,
        clients_per_round=config.server.clients_per_round,
        threshold_s=pc.threshold_s,
        threshold_factor=pc.threshold_factor,
    )

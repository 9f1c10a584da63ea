"""Each algorithm's build function, found through ``SETUPS`` by its [server] config model.

A setup receives what every run shares (``Parts``: the config, the task with its trainer and
data, the population) and prepares the trainer for its procedure (a personal part, the model's
blocks) *before* the executor is made, so that a process pool ships a ready trainer. It returns
the function that makes the run's driver once the runtime exists.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedtempo.aggregation import asynchronous as agg
from fedtempo.aggregation import staleness as st
from fedtempo.aggregation.sync import FedAvg, RobustStep, SyncRule
from fedtempo.algorithms.asynchronous import AdaptiveEpochs
from fedtempo.algorithms.fedavg import FedAvgRounds
from fedtempo.algorithms.protocol import RoundAlgorithm
from fedtempo.algorithms.pruned import PrunedRounds, PrunedState, personalized_evaluator
from fedtempo.algorithms.splitfed import Planner, SplitFedRounds
from fedtempo.alloc import sfl
from fedtempo.alloc.pruning import equal_share, solve_admitting
from fedtempo.client.trainer import PersonalSetup
from fedtempo.errors import ConfigError
from fedtempo.experiment.config import ExperimentConfig
from fedtempo.experiment.servers import (
    AsyncConfig,
    AsyncFedEDServer,
    FedAsyncServer,
    FedAvgServer,
    FedBuffServer,
    FedProxServer,
    PrunedServer,
    RoundsConfig,
    SplitConfig,
    SplitFedServer,
)
from fedtempo.experiment.taskdata import TaskData
from fedtempo.personalize.masks import last_layer, personal_mask
from fedtempo.rng import Streams
from fedtempo.sim.asyncserver import AsyncServer
from fedtempo.sim.rounds import RoundDriver
from fedtempo.sim.task import SimTask
from fedtempo.sim.timeline import Runtime
from fedtempo.split.models import splittable
from fedtempo.split.profile import profile_cuts
from fedtempo.system.population import Population

Driver = RoundDriver | AsyncServer
MakeDriver = Callable[[Runtime], Driver]


@dataclass(frozen=True)
class Parts:
    """What every single-model run shares when its algorithm is set up."""

    config: ExperimentConfig
    task: SimTask
    data: TaskData
    population: Population
    streams: Streams


def sync_rule(s: FedAvgServer) -> SyncRule:
    """The synchronous rule of a fedavg/fedprox [server] table (its ``reducer``)."""
    if s.reducer == "mean":
        return FedAvg(s.server_lr)
    return RobustStep(s.reducer, s.server_lr, s.trim)


def async_rule(s: AsyncConfig) -> agg.AsyncAggregator:
    """The composed asynchronous rule of an asynchronous [server] table."""
    if isinstance(s, FedAsyncServer):
        f = s.fedasync
        weights: dict[str, st.StalenessWeight] = {
            "constant": st.Constant(),
            "polynomial": st.Polynomial(f.poly_a),
            "hinge": st.Hinge(f.hinge_a, f.hinge_b),
        }
        return agg.AsyncAggregator(weights[f.staleness], agg.MixStep(f.alpha))
    if isinstance(s, FedBuffServer):
        b = s.fedbuff
        weight = st.InverseSqrt() if b.staleness_weight else st.Constant()
        return agg.AsyncAggregator(weight, agg.BufferStep(b.buffer_size, b.server_lr, b.by_samples))
    assert isinstance(s, AsyncFedEDServer)
    e = s.asyncfeded
    return agg.AsyncAggregator(st.Euclidean(e.lam, e.epsilon), agg.DeltaStep(1.0))


def adaptive_epochs(s: AsyncConfig) -> AdaptiveEpochs | None:
    """AsyncFedED's local-epoch rule of an asynchronous [server] table (None: fixed epochs)."""
    if not isinstance(s, AsyncFedEDServer):
        return None
    e = s.asyncfeded
    return AdaptiveEpochs(e.kappa, e.gamma_bar, e.k_init, e.k_max)


def async_driver(s: AsyncConfig, rt: Runtime, task: SimTask) -> AsyncServer:
    """The asynchronous driver of the configured rule (AsyncFedED adapts local epochs)."""
    epochs = adaptive_epochs(s)
    return AsyncServer(
        rt,
        task,
        rule=async_rule(s),
        concurrency=s.concurrency,
        max_updates=s.max_updates,
        dispatch=s.dispatch,
        epochs=epochs,
    )


def round_driver(s: RoundsConfig, task: SimTask, algorithm: RoundAlgorithm[Any]) -> MakeDriver:
    return lambda rt: RoundDriver(
        rt,
        [task],
        algorithm,
        rounds=s.rounds,
        clients_per_round=s.clients_per_round,
        deadline=s.deadline,
    )


def _setup_async(p: Parts) -> MakeDriver:
    s = p.config.server
    assert isinstance(s, AsyncConfig)
    return lambda rt: async_driver(s, rt, p.task)


def _setup_fedavg(p: Parts) -> MakeDriver:
    s = p.config.server
    assert isinstance(s, FedAvgServer)
    return round_driver(s, p.task, FedAvgRounds(sync_rule(s), p.task.workload()))


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


def _setup_splitfed(p: Parts) -> MakeDriver:
    """SplitFed rounds: the task's model in blocks (set on its trainer), its per-cut profile,
    the planner; the edge server's FLOP/s (``server_factor`` x the median device's unless
    given)."""
    s, task = p.config.server, p.task
    assert isinstance(s, SplitFedServer)
    sc = s.split
    blocks = splittable(p.config.model.name, task.trainer.model)
    task.trainer.blocks = blocks
    profile = profile_cuts(copy.deepcopy(blocks), p.data.input_shape)
    speeds = np.asarray(p.population.compute.flops_per_s, dtype=np.float64)
    server_flops = sc.server_flops or sc.server_factor * float(np.median(speeds))
    planner = sfl_planner(sc, len(profile.names), p.streams)
    return round_driver(s, task, SplitFedRounds(task.workload(), profile, planner, server_flops))


def _setup_pruned(p: Parts) -> MakeDriver:
    """Pruned-personalized rounds: the personal setup on the task's trainer, the KKT or fixed
    policy, and the personalized evaluator (each device's own model on its own test split)."""
    s, task = p.config.server, p.task
    assert isinstance(s, PrunedServer)
    pc, model = s.pruning, task.trainer.model
    names = [last_layer(model)] if pc.personal is None else list(pc.personal)
    try:
        mask = personal_mask(model, names)
    except ValueError as exc:
        raise ConfigError(f"server.pruning.personal: {exc}") from None
    fixed = pc.ratio
    policy = solve_admitting if pc.policy == "kkt" else lambda q: (equal_share(q, fixed), [])
    personal_spec = task.trainer.spec
    if pc.personal_iterations:
        personal_spec = dataclasses.replace(personal_spec, iterations=pc.personal_iterations)
    task.trainer.personal = PersonalSetup(mask, personal_spec)
    algorithm = PrunedRounds(
        task.workload(),
        mask,
        personal_spec,
        policy,
        bandwidth_hz=pc.bandwidth_hz,
        rho_max=pc.rho_max,
        clients_per_round=s.clients_per_round,
        threshold_s=pc.threshold_s,
        threshold_factor=pc.threshold_factor,
    )
    make = round_driver(s, task, algorithm)
    bundle, client_test = p.data.bundle, p.data.client_test
    assert bundle is not None and client_test is not None, "config validation: pruned, not lazy"
    workspace, x, y = copy.deepcopy(model), bundle.train.x, bundle.train.y

    def with_evaluator(rt: Runtime) -> Driver:
        driver = make(rt)
        assert isinstance(driver, RoundDriver)

        def current() -> PrunedState:
            assert isinstance(driver.state, PrunedState)
            return driver.state

        task.evaluate = personalized_evaluator(current, workspace, x, y, client_test)
        return driver

    return with_evaluator


SETUPS: dict[type, Callable[[Parts], MakeDriver]] = {
    FedAvgServer: _setup_fedavg,
    FedProxServer: _setup_fedavg,
    FedAsyncServer: _setup_async,
    FedBuffServer: _setup_async,
    AsyncFedEDServer: _setup_async,
    PrunedServer: _setup_pruned,
    SplitFedServer: _setup_splitfed,
}


def setup(parts: Parts) -> MakeDriver:
    """The registered setup of the config's algorithm."""
    kind = type(parts.config.server)
    if kind not in SETUPS:
        raise ConfigError(
            f"server.algorithm: {parts.config.server.algorithm!r} is not a single-model run"
        )
    return SETUPS[kind](parts)

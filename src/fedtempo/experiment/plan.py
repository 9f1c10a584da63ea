"""Plans without training: the SFL planner's cuts and server shares for a config's first round,
next to the baselines (``fedtempo plan sfl``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from fedtempo.alloc import sfl
from fedtempo.errors import ConfigError
from fedtempo.experiment.build import build
from fedtempo.experiment.config import ExperimentConfig
from fedtempo.experiment.drivers import sfl_planner
from fedtempo.experiment.servers import SplitFedServer
from fedtempo.sim.recorder import Recorder
from fedtempo.sim.rounds import SimView, sample_cohort
from fedtempo.system.availability import available_at


@dataclass(frozen=True)
class SflPlan:
    """The first round's cohort and problem, the configured planner's allocation, and every
    policy's allocation with its solve time (seconds of wall time)."""

    clients: list[int]
    blocks: tuple[str, ...]
    problem: sfl.SflProblem
    chosen: sfl.SflAllocation
    policies: dict[str, tuple[sfl.SflAllocation, float]]
    skipped: dict[str, str]  # policy -> why it was not run


def plan_sfl(config: ExperimentConfig, max_combinations: int = 2_000_000) -> SflPlan:
    """Build ``config`` (algorithm splitfed) and plan its first round at virtual time 0; the
    exhaustive search runs when it has at most ``max_combinations`` cut combinations."""
    s = config.server
    if not isinstance(s, SplitFedServer):
        raise ConfigError(f"server.algorithm: planning SFL needs 'splitfed', got {s.algorithm!r}")
    built = build(config, Recorder())
    split, driver = built.split, built.rounds
    assert split is not None
    rt = driver.rt
    candidates = available_at(rt.devices.availability, driver.eligible, 0.0)
    if not candidates:
        raise ConfigError("devices.availability: no device with data is available at time 0")
    clients = sample_cohort(rt, 0, 0, candidates, s.clients_per_round)
    p = split.problem(clients, SimView(rt, built.task, {}, 0.0))
    sc = s.split
    runs: dict[str, Callable[[sfl.SflProblem], sfl.SflAllocation]] = {
        "plain FL": sfl.plain_fl,
        f"fixed cut {sc.fixed_cut}": sfl_planner(
            sc.model_copy(update={"planner": "fixed"}), p.num_cuts, rt.streams
        ),
        "equal shares": sfl.equal_shares,
        "random cuts": sfl_planner(
            sc.model_copy(update={"planner": "random"}), p.num_cuts, rt.streams
        ),
        "alternating": sfl.alternating,
        "optimal": sfl.optimal,
        "exhaustive": lambda p: sfl.exhaustive(p, max_combinations),
    }
    policies, skipped = {}, {}
    for name, planner in runs.items():
        t0 = time.perf_counter()
        try:
            alloc = planner(p)
        except ConfigError as exc:  # exhaustive on a large cohort
            skipped[name] = str(exc)
            continue
        policies[name] = (alloc, time.perf_counter() - t0)
    return SflPlan(clients, split.profile.names, p, split.planner(p), policies, skipped)

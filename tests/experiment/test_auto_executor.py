"""executor = "auto" and workers = "auto": a pool for runs long enough to pay for one, the
same results either way."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from fedtempo.experiment import parts
from fedtempo.experiment.build import build
from fedtempo.experiment.config import load
from fedtempo.experiment.results import run_experiment
from fedtempo.sim.recorder import Recorder

SMALL = ["server.rounds=3", "server.clients_per_round=4", "eval.interval=0", "batch_clients=off"]


def _kind(overrides: list[str]) -> tuple[str, int]:
    config = load(None, overrides)
    built = build(config, Recorder())
    try:
        trainer = built.task.trainer
        return parts.resolve_executor(config, {0: trainer}, built.task.profile.train_flops)
    finally:
        built.simulation.executor.close()


def test_short_runs_stay_inline_and_workers_are_the_cores() -> None:
    cores = len(os.sched_getaffinity(0))
    assert load(None).executor == "auto" and load(None).workers == "auto"
    assert _kind([]) == ("inline", cores)  # the embedded default
    assert _kind(["workers=3", "executor=process"]) == ("process", 3)


def test_long_runs_get_a_pool_only_where_it_gives_the_same_bits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    long = [*SMALL, "server.rounds=100000"]
    assert _kind(long) == ("process", 2)
    assert _kind([*long, "threads=2"])[0] == "inline"  # several torch threads: other bits
    assert _kind([*long, "batch_clients=on"])[0] == "inline"  # vmap batching: other bits
    assert _kind([*long, "workers=1"])[0] == "inline"
    unknown = [*SMALL[2:], "server.algorithm=fedbuff", "stop.virtual_time=1e6"]
    assert _kind(unknown)[0] == "inline"  # how long it runs is not known in advance
    assert _kind([*unknown, "server.max_updates=10000000"])[0] == "process"


def test_auto_that_picks_a_pool_gives_the_inline_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(parts, "POOL_PAYS_S", 0.0)
    assert _kind(SMALL)[0] == "process"
    _, pooled = run_experiment(load(None, SMALL), None)
    _, inline = run_experiment(load(None, [*SMALL, "executor=inline"]), None)
    assert torch.equal(pooled.final_params[0], inline.final_params[0])


def test_a_pool_started_before_the_data_is_closed_when_the_data_fails(tmp_path: Path) -> None:
    # executor = "process" starts its workers before the data loads; a bad data path must not
    # leave them running
    import multiprocessing
    import time

    from fedtempo.errors import FedTempoError

    config = load(None, ["executor=process", "workers=2", "data.dataset=mnist"])
    config = config.model_copy(
        update={"data": config.data.model_copy(update={"root": str(tmp_path)})}
    )
    with pytest.raises(FedTempoError, match=str(tmp_path)) as failed:
        build(config, Recorder())
    # (``failed`` keeps build's frames, and so its pool, alive: no garbage collector's help)
    end = time.monotonic() + 30
    while multiprocessing.active_children() and time.monotonic() < end:
        time.sleep(0.05)
    assert not multiprocessing.active_children(), failed.traceback[-1]

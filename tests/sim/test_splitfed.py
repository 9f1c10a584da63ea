"""SplitFed rounds on the virtual clock (SPEC D): the same model as FedAvg, the planned latency on
constant links, activations on the event log, config errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedtempo.errors import ConfigError
from fedtempo.experiment.build import Built, build
from fedtempo.experiment.config import load
from fedtempo.sim.recorder import Recorder


def _overrides(root: Path) -> list[str]:
    return [
        "data.dataset=mnist",
        f"data.root={root}",
        "model.name=cnn-s",
        "server.algorithm=splitfed",
        "server.split.planner=optimal",
        "server.split.server_factor=100",
        "partition.num_clients=4",
        "server.clients_per_round=4",
        "server.rounds=2",
        "train.iterations=5",
        "train.momentum=0.5",
        "devices.compute.median_flops=2e8",
        "devices.uplink.median_mbps=2000",
        "devices.downlink.median_mbps=2000",
        "eval.interval=0",
    ]


def _built(root: Path, *extra: str) -> Built:
    return build(load(None, [*_overrides(root), *extra]), Recorder())


def test_splitfed_trains_the_fedavg_model_at_the_planned_latency(shared_mnist: Path) -> None:
    split = _built(shared_mnist)
    result = split.simulation.run()
    server, log = split.split, split.rounds.state.log
    assert server is not None and len(log) == 2
    cuts = np.concatenate([r.plan.cuts for r in log])
    assert np.any(cuts < 4) and np.any(cuts == 4)  # some devices split, some train alone
    same = [o for o in _overrides(shared_mnist) if not o.startswith("server.split")]
    fedavg = build(load(None, [*same, "server.algorithm=fedavg"]), Recorder())
    fedavg.simulation.run()
    assert torch.allclose(split.task.model.params, fedavg.task.model.params, atol=1e-6, rtol=0)
    # Constant links and compute: each device's clock time is exactly the plan's T_n.
    for r in log:
        assert np.allclose(r.measured, r.plan.latency, rtol=1e-9)
        assert r.plan.shares.sum() <= 1 + 1e-9
    # Each split device sends its activations once per iteration; plain ones never do.
    first = log[0]
    smashed = [e for e in result.recorder.events if e.kind == "smashed" and e.version == 0]
    for i, c in enumerate(first.clients):
        sent = [e for e in smashed if e.client == c]
        cut = int(first.plan.cuts[i])
        assert len(sent) == (5 if cut < 4 else 0)
        if sent:
            bits = first.problem.batch[i] * server.profile.smashed_bits[cut - 1]
            assert sent[0].bytes == int(bits // 8)


def test_split_config_errors_name_the_key(shared_mnist: Path) -> None:
    with pytest.raises(ConfigError, match="'mlp' has no split points"):
        _built(shared_mnist, "model.name=mlp")
    with pytest.raises(ConfigError, match=r"server.split.fixed_cut: cut 9"):
        _built(shared_mnist, "server.split.planner=fixed", "server.split.fixed_cut=9")
    with pytest.raises(ConfigError, match="shared_uplink"):
        _built(shared_mnist, "devices.shared_uplink=true")


def test_plan_sfl_prints_cuts_shares_and_baselines(shared_mnist: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fedtempo.cli import app

    config = tmp_path / "sfl.toml"
    config.write_text('[server]\nalgorithm = "splitfed"\n[model]\nname = "cnn-s"\n')
    sets = [s for o in _overrides(shared_mnist)[4:] for s in ("-s", o)]
    out = CliRunner().invoke(
        app,
        [
            "plan",
            "sfl",
            str(config),
            "-s",
            "data.dataset=mnist",
            "-s",
            f"data.root={shared_mnist}",
            *sets,
        ],
        terminal_width=200,
    )
    assert out.exit_code == 0, out.output
    for word in (
        "SFL plan (optimal)",
        "conv1",
        "fc2 (all)",
        "plain FL",
        "fixed cut 1",
        "equal shares",
        "random cuts",
        "alternating",
        "exhaustive",
    ):
        assert word in out.output
    bad = CliRunner().invoke(app, ["plan", "sfl", str(config), "-s", "server.algorithm=fedavg"])
    assert bad.exit_code == 2 and "needs 'splitfed'" in bad.output

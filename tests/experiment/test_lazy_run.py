"""`fedtempo run` over lazily generated Synthetic devices (data.synthetic.lazy): a population far
beyond what fits up front, reproducible, with its results folder, and clear errors where lazy
data cannot serve."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fedtempo.errors import ConfigError
from fedtempo.experiment.config import load
from fedtempo.experiment.deploy import shard
from fedtempo.experiment.parts import synthetic_up_front_bytes
from fedtempo.experiment.results import run_experiment
from fedtempo.experiment.taskdata import task_data
from fedtempo.rng import Streams

LAZY = [
    "data.dataset=synthetic",
    "data.synthetic.lazy=true",
    "partition.scheme=natural",
    "model.name=logreg",
    "train.lr=0.01",
    "server.algorithm=fedbuff",
    "server.fedbuff.buffer_size=10",
    "eval.interval=0",
]


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_a_run_over_200000_lazy_devices_in_a_subprocess_stays_small(tmp_path: Path) -> None:
    """Up front, 200,000 Synthetic devices hold about 21 GiB; lazily the whole run (torch
    included) stays under 1.5 GiB, and every device is in clients.csv."""
    n = 200_000
    sets = [*LAZY, f"partition.num_clients={n}", "server.concurrency=50", "server.max_updates=300"]
    assert synthetic_up_front_bytes(load(None, sets)) > 20 * 2**30
    args = [a for s in sets for a in ("--set", s)]
    code = (
        "import resource, sys; from fedtempo.cli import app\n"
        "try: app(sys.argv[1:])\n"
        "except SystemExit as e: assert not e.code, e.code\n"
        "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", code, "run", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak_kib = int(proc.stdout.rsplit("PEAK", 1)[1].split()[0])
    assert peak_kib < 1.5 * 2**20, f"peak RSS {peak_kib / 2**20:.2f} GiB"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_clients"] == n and summary["updates_applied"] == 300
    rows = _csv(out / "clients.csv")
    assert len(rows) == n and [int(r["client"]) for r in rows[:3]] == [0, 1, 2]
    assert sum(int(r["updates"]) for r in rows) == 300
    data = task_data(load(None, sets), Streams(0))
    sizes = [int(r["train_samples"]) for r in rows]
    assert sizes == data.train_sizes.tolist()
    assert [int(r["test_samples"]) for r in rows[:100]] == data.test_sizes[:100].tolist()


def test_a_lazy_run_is_bit_identical_for_the_same_seed_and_learns(tmp_path: Path) -> None:
    sets = [*LAZY, "partition.num_clients=300", "server.concurrency=20", "server.max_updates=200"]
    sets.append("eval.interval=1e6")  # an evaluation at the start, and the final one
    a, ra = run_experiment(load(None, sets), tmp_path / "a")
    b, rb = run_experiment(load(None, sets), tmp_path / "b")
    assert torch.equal(ra.final_params[0], rb.final_params[0])
    assert _csv(tmp_path / "a" / "clients.csv") == _csv(tmp_path / "b" / "clients.csv")
    assert a["final_accuracy"] == b["final_accuracy"]
    assert a["final_accuracy"] > a["initial_accuracy"] + 0.1  # 300 devices: a model can fit them
    _, rc = run_experiment(load(None, [*sets, "seed=1"]), None)
    assert not torch.equal(ra.final_params[0], rc.final_params[0])


def test_the_lazy_test_set_is_the_test_samples_of_the_drawn_devices() -> None:
    config = load(
        None, [*LAZY, "partition.num_clients=5000", "eval.test_devices=40", "server.max_updates=9"]
    )
    data = task_data(config, Streams(0))
    again = task_data(config, Streams(0))
    assert torch.equal(data.test.x, again.test.x)
    picked = Streams(0).numpy("eval-devices", 0).choice(5000, 40, replace=False)
    assert len(data.test) == int(data.test_sizes[picked].sum())
    assert data.bundle is None and data.client_test is None
    x, y = shard(config, 17)  # a party's data under the same config: the same device
    x2, y2 = data.clients.data(17)
    assert torch.equal(x, x2) and torch.equal(y, y2) and len(y) == data.train_sizes[17]
    assert np.all(data.train_sizes + data.test_sizes >= config.data.synthetic.min_size)


@pytest.mark.parametrize(
    ("sets", "needle"),
    [
        (["data.dataset=digits", "partition.scheme=dirichlet"], "data.synthetic.lazy"),
        (["partition.scheme=iid"], "partition.scheme"),
        (["partition.client_test_fraction=0.2"], "partition.client_test_fraction"),
        (
            [
                "server.algorithm=pruned",
                "partition.client_test_fraction=0",
                "devices.uplink.kind=wireless",
            ],
            "pruned",
        ),
    ],
    ids=["not-synthetic", "not-natural", "client-test", "pruned"],
)
def test_lazy_data_where_it_cannot_serve_is_a_clear_error(sets: list[str], needle: str) -> None:
    base = [s for s in LAZY if not s.startswith("server.")]
    with pytest.raises(ConfigError, match=needle):
        load(None, [*base, *sets])


def test_up_front_synthetic_that_would_not_fit_points_to_lazy(tmp_path: Path) -> None:
    eager = [s for s in LAZY if "lazy" not in s]
    config = load(None, [*eager, "partition.num_clients=5000000", "server.max_updates=10"])
    with pytest.raises(ConfigError, match=r"set data.synthetic.lazy = true"):
        run_experiment(config, tmp_path)

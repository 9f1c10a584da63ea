"""End-to-end: runs, results folder, reproducibility, CLI, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fedtempo.cli import app
from fedtempo.experiment import results as results_mod
from fedtempo.experiment.config import load
from fedtempo.experiment.results import run_experiment

TINY = ["server.rounds=3", "server.clients_per_round=5", "eval.interval=2.0"]
runner = CliRunner()


def _rows(path: Path, drop: tuple[str, ...] = ("wall_s",)) -> list[dict[str, str]]:
    with path.open() as fh:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(fh)]


def test_same_seed_gives_bit_identical_results(tmp_path: Path) -> None:
    config = load(None, TINY)
    s1, r1 = run_experiment(config, tmp_path / "a")
    s2, r2 = run_experiment(config, tmp_path / "b")
    assert torch.equal(r1.final_params[0], r2.final_params[0])
    for name in ("events.csv", "evaluations.csv", "clients.csv"):
        assert _rows(tmp_path / "a" / name) == _rows(tmp_path / "b" / name)
    s1.pop("wall_s")
    s2.pop("wall_s")
    assert s1 == s2
    _, r3 = run_experiment(load(None, [*TINY, "seed=1"]), None)
    assert not torch.equal(r1.final_params[0], r3.final_params[0])


def test_fedprox_with_mu_zero_equals_fedavg() -> None:
    _, avg = run_experiment(load(None, TINY), None)
    _, prox = run_experiment(load(None, [*TINY, "server.algorithm=fedprox", "server.mu=0"]), None)
    _, prox1 = run_experiment(load(None, [*TINY, "server.algorithm=fedprox", "server.mu=1"]), None)
    assert torch.equal(avg.final_params[0], prox.final_params[0])
    assert not torch.equal(avg.final_params[0], prox1.final_params[0])


def test_results_folder_contents(tmp_path: Path) -> None:
    summary, _ = run_experiment(load(None, TINY), tmp_path)
    for name in (
        "config.toml",
        "events.csv",
        "evaluations.csv",
        "clients.csv",
        "accuracy.png",
        "summary.json",
    ):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert summary["model_version"] == 3 and summary["updates_applied"] == 15
    assert load(tmp_path / "config.toml") == load(None, TINY)  # the resolved config reruns
    clients = _rows(tmp_path / "clients.csv")
    assert len(clients) == 20 and sum(int(c["updates"]) for c in clients) == 15
    evals = _rows(tmp_path / "evaluations.csv")
    assert float(evals[0]["time"]) == 0.0 and int(evals[0]["version"]) == 0
    assert summary["final_accuracy"] > float(evals[0]["accuracy"]) + 0.1  # it learned


def test_a_crashed_run_leaves_no_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_experiment(load(None, TINY), tmp_path)
    assert (tmp_path / "summary.json").exists()

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(results_mod, "accuracy_plot", boom)
    with pytest.raises(RuntimeError):
        run_experiment(load(None, TINY), tmp_path)
    assert not (tmp_path / "summary.json").exists()


def test_cli_run_end_to_end(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.toml"
    cfg.write_text('name = "tiny"\n[server]\nrounds = 2\nclients_per_round = 4\n')
    result = runner.invoke(
        app, ["run", str(cfg), "--out", str(tmp_path / "out"), "--set", "partition.num_clients=8"]
    )
    assert result.exit_code == 0, result.output
    assert "fedtempo results" in result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["num_clients"] == 8 and summary["updates_applied"] == 8


def test_the_command_line_ends_at_once_with_its_files_written_and_its_exit_code(
    tmp_path: Path,
) -> None:
    """``python -m fedtempo.cli`` (main) skips the interpreter's teardown after a run; what it
    wrote is all there, and a failing command still exits with its code."""
    import subprocess
    import sys

    cfg = tmp_path / "tiny.toml"
    cfg.write_text('name = "tiny"\n[server]\nrounds = 2\nclients_per_round = 4\n')
    base = [sys.executable, "-m", "fedtempo.cli", "run", str(cfg), "--out"]
    ok = subprocess.run([*base, str(tmp_path / "a")], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert ok.stdout.rstrip().endswith("accuracy.png)")  # the last line printed got out
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["updates_applied"] == 8
    rows = list(csv.DictReader((tmp_path / "a" / "clients.csv").open()))
    assert len(rows) == summary["num_clients"]
    bad = [*base, str(tmp_path / "b"), "--set", "server.algorithm=nope"]
    failed = subprocess.run(bad, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2 and "server.algorithm: bad value" in failed.stderr


def test_cli_compare(tmp_path: Path) -> None:
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text('name = "avg"\n[server]\nrounds = 2\n')
    b.write_text('name = "prox"\n[server]\nrounds = 2\nalgorithm = "fedprox"\n')
    result = runner.invoke(app, ["compare", str(a), str(b), "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cmp" / "accuracy.png").is_file()
    rows = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert [r["algorithm"] for r in rows] == ["fedavg", "fedprox"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "server.algorithm=nope"], "server.algorithm: bad value 'nope'"),
        (["--set", "partition.num_clients=5000"], "more clients than samples"),
        (["--set", "partition.alpha=-1"], "alpha must be > 0"),
        (
            ["--set", "data.dataset=mnist", "--set", "data.root=/nonexistent"],
            "mnist: data files not found",
        ),
        (["--set", "model.name=cnn-s"], "needs 1x28x28"),
        (["missing.toml"], "missing.toml: config file not found"),
    ],
)
def test_cli_bad_input_is_one_line_without_traceback(
    tmp_path: Path, args: list[str], message: str
) -> None:
    if args[0] == "missing.toml":
        args = [str(tmp_path / "missing.toml")]
    result = runner.invoke(app, ["run", *args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    flat = " ".join(result.output.split())
    assert message in flat
    assert "Traceback" not in result.output
    assert not (tmp_path / "o" / "summary.json").exists()

"""The deployment commands refuse what they cannot do, with a message saying why."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from fedtempo.cli import app
from tests.conftest import REPO

runner = CliRunner()


def test_serve_refuses_plain_http_off_loopback(tmp_path: Path) -> None:
    r = runner.invoke(app, ["serve", "--state", str(tmp_path / "s"), "--host", "0.0.0.0"])
    assert r.exit_code == 2
    assert "refusing plain HTTP" in r.output and "--tls-self-signed" in r.output
    assert not (tmp_path / "s").exists()  # nothing was created


def test_serve_names_a_bad_aggregation_policy_or_worker_count(tmp_path: Path) -> None:
    state = str(tmp_path / "s")
    r = runner.invoke(app, ["serve", "--state", state, "--aggregation", "eventually"])
    assert r.exit_code != 0 and "--aggregation: 'eventually' is not one of" in r.output
    r = runner.invoke(app, ["serve", "--state", state, "--workers", "many"])
    assert r.exit_code != 0 and "--workers: 'many' is neither a number nor" in r.output
    r = runner.invoke(app, ["serve", "--state", state, "--workers", "0"])
    assert r.exit_code != 0 and "at least 1 worker" in r.output


def test_job_create_names_an_algorithm_the_service_cannot_run(tmp_path: Path) -> None:
    config = REPO / "configs" / "w_sfl.toml"
    r = runner.invoke(
        app, ["job", "create", str(config), "--server", "http://127.0.0.1:9", "--admin", "x"]
    )
    assert r.exit_code == 2 and "cannot run as a service job yet" in r.output


def test_client_needs_data_and_a_readable_credential(tmp_path: Path) -> None:
    r = runner.invoke(app, ["client", "--credential", str(tmp_path / "missing.json")])
    assert r.exit_code == 2 and "not a fedtempo party credential" in r.output


def test_a_party_reads_its_own_data_from_npz_or_safetensors(tmp_path: Path) -> None:
    import numpy as np
    import pytest
    import torch
    from safetensors.torch import save_file

    from fedtempo.errors import ConfigError
    from fedtempo.experiment.deploy import read_data

    x, y = np.ones((6, 4), dtype=np.float64), np.arange(6)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    got_x, got_y = read_data(tmp_path / "d.npz")
    assert got_x.dtype == torch.float32 and got_y.tolist() == list(range(6))
    save_file({"x": torch.ones(6, 4), "y": torch.arange(6)}, str(tmp_path / "d.safetensors"))
    assert read_data(tmp_path / "d.safetensors")[0].shape == (6, 4)
    np.savez(tmp_path / "bad.npz", x=x, y=y[:3])
    with pytest.raises(ConfigError, match="x has 6 rows, y has 3"):
        read_data(tmp_path / "bad.npz")
    with pytest.raises(ConfigError, match=r"\.npz or \.safetensors"):
        read_data(tmp_path / "d.csv")

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


def test_job_create_names_an_algorithm_the_service_cannot_run(tmp_path: Path) -> None:
    config = REPO / "configs" / "w_sfl.toml"
    r = runner.invoke(
        app, ["job", "create", str(config), "--server", "http://127.0.0.1:9", "--admin", "x"]
    )
    assert r.exit_code == 2 and "cannot run as a service job yet" in r.output


def test_client_needs_data_and_a_readable_credential(tmp_path: Path) -> None:
    r = runner.invoke(app, ["client", "--credential", str(tmp_path / "missing.json")])
    assert r.exit_code == 2 and "not a fedtempo party credential" in r.output

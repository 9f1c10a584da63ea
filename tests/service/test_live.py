"""End to end on loopback: a real ``fedtempo serve`` process, a job made from a run config, and
5 party processes started by ``fedtempo emulate`` training on digits; the live model's accuracy
is within 2 points of the simulator's on the same config."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

import fedtempo
from tests.conftest import REPO
from tests.service.live import CLI, Server

pytestmark = pytest.mark.slow

CONFIGS = {
    "fedavg": (
        "default.toml",
        "[partition]\nnum_clients = 5\n[server]\nalgorithm = 'fedavg'\n"
        "rounds = 12\nclients_per_round = 5\n",
    ),
    "asyncfeded": (
        "default_asyncfeded.toml",
        "[partition]\nnum_clients = 5\n[server]\n"
        "algorithm = 'asyncfeded'\nconcurrency = 3\nmax_updates = 150\n"
        "[server.asyncfeded]\nk_init = 1\nk_max = 5\n",
    ),
}


@pytest.mark.parametrize("algorithm", sorted(CONFIGS))
def test_live_accuracy_is_within_two_points_of_the_simulator(
    tmp_path: Path, algorithm: str
) -> None:
    base, extra = CONFIGS[algorithm]
    config = tmp_path / "live.toml"
    config.write_text(f'extends = "{REPO / "configs" / base}"\nname = "live"\n{extra}')
    sim = fedtempo.run(fedtempo.load_config(config), tmp_path / "sim")
    srv = Server(tmp_path / "state")
    srv.start()
    env = {**os.environ, "FEDTEMPO_SERVER": srv.url, "FEDTEMPO_ADMIN": srv.token}
    try:
        made = subprocess.run(
            [*CLI, "job", "create", str(config)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        job = made.stdout.strip().splitlines()[-1]
        out = subprocess.run(
            [
                *CLI,
                "emulate",
                str(config),
                "--job",
                job,
                "--time-scale",
                "0.01",
                "--creds",
                str(tmp_path / "creds"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=True,
        )
    finally:
        srv.kill()
    found = re.search(r"final accuracy on the config's test set: ([0-9.]+)", out.stdout)
    assert found, out.stdout + out.stderr
    live = float(found.group(1))
    assert "done" in out.stdout
    print("LIVE", algorithm, live, sim["final_accuracy"])
    assert abs(live - sim["final_accuracy"]) <= 0.02, (live, sim["final_accuracy"])

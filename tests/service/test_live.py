"""End to end on loopback: a real ``fedtempo serve`` process, a job made from a run config, and
5 party processes started by ``fedtempo emulate`` training on digits; the live model's mean
accuracy over the second half of the run's versions is within 2 points of the simulator's over
the same range of versions on the same config.

The second half's mean, not the last version alone: the live run's arrival order follows the
wall clock, so it is another sample of the same process, and one version's accuracy on 359 test
digits swings by several points between neighbours (the simulator's own AsyncFedED curve drops
from 91% to 86% between versions 22 and 33); a single last version failed this check once in CI
(90.25% against 97.21%), while the second half's mean stayed within 1 point of the simulator's
in each of 5 local runs, 2 of them beside two busy cores. Synchronous FedAvg aggregates the
same clients' updates in the same rounds live, so its last version is held to the 2 points
too."""

from __future__ import annotations

import csv
import os
import re
import subprocess
from pathlib import Path

import httpx
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

SAME_ORDER = {"fedavg"}  # synchronous rounds: the live run aggregates what the simulator does


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
                "--evaluate-every-s",
                "0.25",
                "--creds",
                str(tmp_path / "creds"),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=True,
        )
        board = httpx.get(
            srv.url + "/v1/dashboard", headers={"authorization": f"Bearer {srv.token}"}, timeout=30
        ).json()
    finally:
        srv.kill()
    found = re.search(r"final accuracy on the config's test set: ([0-9.]+)", out.stdout)
    assert found, out.stdout + out.stderr
    assert "done" in out.stdout
    (mine,) = [j for j in board["jobs"] if j["job"] == job]
    live = {int(e["version"]): float(e["accuracy"]) for e in mine["evaluations"]}
    last = max(live)
    assert last == sim["model_version"], (live, out.stdout)
    assert abs(live[last] - float(found.group(1))) < 1e-4, (live, out.stdout)
    simulated = {
        int(row["version"]): float(row["accuracy"])
        for row in csv.DictReader((tmp_path / "sim" / "evaluations.csv").open())
    }
    live_mean, sim_mean = _second_half(live, last), _second_half(simulated, last)
    print("LIVE", algorithm, live_mean, sim_mean, live[last], sim["final_accuracy"])
    assert abs(live_mean - sim_mean) <= 0.02, (live, simulated)
    if algorithm in SAME_ORDER:  # rounds of the same clients: the last version itself agrees
        assert abs(live[last] - sim["final_accuracy"]) <= 0.02, (live, simulated)


def _second_half(accuracy: dict[int, float], last: int) -> float:
    """The mean accuracy of the evaluated versions in the second half of ``last`` versions."""
    late = [a for v, a in accuracy.items() if v >= last / 2]
    assert len(late) >= 3, accuracy  # a mean of a few versions, not one
    return sum(late) / len(late)

"""Service test helpers: a tiny job spec, an in-process app, scripted parties."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from fastapi.testclient import TestClient

from fedtempo.experiment.deploy import blueprint
from fedtempo.service import auth
from fedtempo.service.aggregation import AggregationSettings
from fedtempo.service.app import create_app
from fedtempo.service.party import Party, Trained, WorkTask
from fedtempo.service.workers import Launcher

BASE = "http://testserver"


def tiny_spec(server: dict[str, Any], **job: Any) -> dict[str, Any]:
    """logreg on 4 features and 3 classes: 15 parameters."""
    return {
        "name": "tiny",
        "seed": 3,
        "model": {"name": "logreg"},
        "train": {"epochs": 1, "batch_size": 8, "lr": 0.1},
        "server": server,
        "job": {"gather_s": 0.0, **job},
        "input_shape": [4],
        "num_classes": 3,
    }


class InProcess:
    """The ASGI app in this process (its ticker runs) with an admin client."""

    def __init__(
        self,
        root: Path,
        clock: Callable[[], float] = time.time,
        token: str | None = None,
        aggregation: AggregationSettings | None = None,
        launcher: Launcher | None = None,
    ) -> None:
        self.app = create_app(root, blueprint, clock, aggregation, launcher)
        self.client = TestClient(self.app, base_url=BASE)
        self.client.__enter__()
        self.service = self.app.state.service
        self.token = self.service.new_admin_token or token

    def admin(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    def create(self, spec: dict[str, Any]) -> str:
        r = self.client.post("/v1/jobs", json={"name": "tiny", "spec": spec}, headers=self.admin())
        assert r.status_code == 201, r.text
        return str(r.json()["job"])

    def enroll(self, job: str, name: str) -> auth.Credential:
        key = auth.new_key()
        r = self.client.post(
            f"/v1/jobs/{job}/parties",
            json={"name": name, "public_key": auth.b64(auth.public_key_bytes(key))},
            headers=self.admin(),
        )
        assert r.status_code == 201, r.text
        return auth.Credential(BASE, job, name, auth.private_bytes(key))

    def party(self, cred: auth.Credential, deltas: dict[str, torch.Tensor], samples: int) -> Party:
        """A party whose 'training' returns a scripted delta (by task id)."""

        def train(task: WorkTask, start: torch.Tensor) -> Trained:
            return Trained(deltas[task.task], samples, 1, 0.5)

        return Party(cred, train, samples, client=self.client, wait_s=0.0, give_up_s=5.0)

    def status(self, job: str) -> dict[str, Any]:
        r = self.client.get(f"/v1/jobs/{job}", headers=self.admin())
        assert r.status_code == 200, r.text
        return dict(r.json())

    def wait_version(self, job: str, version: int, timeout: float = 60.0) -> dict[str, Any]:
        """The job's status once its model has reached ``version`` (aggregator workers publish
        in the background)."""
        end = time.monotonic() + timeout
        while True:
            status = self.status(job)
            if status["version"] >= version:
                return status
            assert time.monotonic() < end, f"version {version} not published: {status}"
            time.sleep(0.05)

    def wait_idle(self, job: str, timeout: float = 30.0) -> None:
        """Until the job holds no aggregator worker (a worker exits after it publishes)."""
        end = time.monotonic() + timeout
        while job in self.service.aggregation.held:
            assert time.monotonic() < end, f"job {job} still holds a worker"
            time.sleep(0.02)

    def close(self) -> None:
        self.client.__exit__(None, None, None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

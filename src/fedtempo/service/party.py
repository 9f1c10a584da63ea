"""The party agent: ask for work, download the model, train, upload the delta; again.

``Party`` is the Python API (embed it in your own training code: pass a ``train`` function);
``fedtempo client`` runs it with fedtempo's own local training on the party's data. Every
upload carries an idempotency key (its task id), so an upload retried after a lost answer or a
server restart never counts twice. Models are cached by version.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import torch

from fedtempo.service import wire
from fedtempo.service.auth import Credential
from fedtempo.service.client import Http, ServiceError, checked, reason_of, signer
from fedtempo.service.jobs import Envelope


@dataclass(frozen=True)
class WorkTask:
    """One training the server asked for."""

    task: str
    base_version: int
    dispatch: int
    epochs: int | None
    round: int | None = None
    deadline: float | None = None


@dataclass(frozen=True)
class Trained:
    """What local training produced: delta = local model - start model."""

    delta: torch.Tensor
    samples: int
    steps: int
    loss: float


TrainFn = Callable[[WorkTask, torch.Tensor], Trained]


@dataclass(frozen=True)
class Pace:
    """Emulated device times (wall seconds): after the download, the training (at least
    ``compute_s`` per local epoch, counting the real training time; ``epochs`` when the task
    does not say), before the upload."""

    download_s: float = 0.0
    compute_s: float = 0.0
    upload_s: float = 0.0
    epochs: int = 1


@dataclass
class PartyStats:
    tasks: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    answers: list[dict[str, Any]] = field(default_factory=list)


class Party:
    """One party of one job (its credential names the server, the job and the party)."""

    def __init__(
        self,
        credential: Credential,
        train: TrainFn,
        samples: int,
        *,
        ca: Path | None = None,
        wait_s: float = 20.0,
        max_backoff_s: float = 20.0,
        pace: Pace | None = None,
        sleep: Callable[[float], None] = time.sleep,
        client: httpx.Client | None = None,
        give_up_s: float = 600.0,
    ) -> None:
        self.cred, self.train, self.samples = credential, train, samples
        self.http = Http(
            credential.server,
            ca=ca,
            max_backoff_s=max_backoff_s,
            sleep=sleep,
            client=client,
            give_up_s=give_up_s,
        )
        self.wait_s, self.pace, self.sleep = wait_s, pace or Pace(), sleep
        self._cache: tuple[int, torch.Tensor] | None = None
        self.base = f"/v1/jobs/{credential.job}"
        self._layout: wire.Layout | None = None

    def _get(self, path: str) -> Any:
        full = self.base + path
        return checked(self.http.send("GET", full, headers=signer(self.cred, "GET", full)))

    def spec(self) -> dict[str, Any]:
        """The job's spec, the party's id and the model's layout."""
        info = dict(self._get("/spec").json())
        self._layout = wire.Layout.from_json(info["layout"])
        return info

    @property
    def layout(self) -> wire.Layout:
        if self._layout is None:
            self.spec()
        assert self._layout is not None
        return self._layout

    def model(self, version: int) -> torch.Tensor:
        """The global model of ``version`` (from the cache when it is the last one fetched)."""
        if self._cache is not None and self._cache[0] == version:
            return self._cache[1]
        vector, _ = wire.parse(self.layout, self._get(f"/versions/{version}").content)
        self._cache = (version, vector)
        return vector

    def ask(self) -> WorkTask | bool | None:
        """A task; None when there is none yet; False when the job is over."""
        path = self.base + "/work"
        body = json.dumps({"samples": self.samples, "wait_s": self.wait_s}).encode()
        r = checked(
            self.http.send(
                "POST",
                path,
                body,
                "application/json",
                signer(self.cred, "POST", path),
                timeout_s=self.wait_s + 30.0,
            )
        )
        return self._task(r.json())

    @staticmethod
    def _task(data: dict[str, Any] | None) -> WorkTask | bool | None:
        if not data or data.get("wait"):
            return None
        if data.get("done"):
            return False
        return WorkTask(
            str(data["task"]),
            int(data["base_version"]),
            int(data["dispatch"]),
            data.get("epochs"),
            data.get("round"),
            data.get("deadline"),
        )

    def upload(self, task: WorkTask, result: Trained) -> tuple[int, dict[str, Any]]:
        env = Envelope(task.task, task.base_version, result.samples, result.steps, result.loss)
        body = wire.encode(self.layout, result.delta, env.to_meta())
        path = f"{self.base}/updates/{task.task}"
        r = self.http.send(
            "PUT", path, body, "application/octet-stream", signer(self.cred, "PUT", path)
        )
        data = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        if r.status_code >= 400 and not data:
            data = {"error": reason_of(r)}
        return r.status_code, dict(data)

    def step(self, task: WorkTask, stats: PartyStats) -> None:
        start = self.model(task.base_version)
        self.sleep(self.pace.download_s)
        began = time.monotonic()
        result = self.train(task, start)
        epochs = task.epochs or self.pace.epochs
        self.sleep(max(0.0, self.pace.compute_s * epochs - (time.monotonic() - began)))
        self.sleep(self.pace.upload_s)
        status, answer = self.upload(task, result)
        stats.tasks += 1
        if status < 400:
            stats.accepted += 1
        else:
            reason = str(answer.get("error", status))
            stats.rejected[reason] = stats.rejected.get(reason, 0) + 1
        stats.answers.append({"status": status, **answer})

    def run(
        self, max_tasks: int | None = None, stop: Callable[[], bool] | None = None
    ) -> PartyStats:
        """Work until the job is over, ``max_tasks`` trainings, or ``stop()`` says so."""
        stats = PartyStats()
        task: WorkTask | bool | None = None
        while (max_tasks is None or stats.tasks < max_tasks) and not (stop and stop()):
            if task is None:
                task = self.ask()
            if task is False:
                break
            if task is None or task is True:
                continue
            self.step(task, stats)
            task = self._task(stats.answers[-1].get("next"))  # async: the next task came along
        return stats

    def close(self) -> None:
        self.http.close()


__all__ = ["Pace", "Party", "PartyStats", "ServiceError", "TrainFn", "Trained", "WorkTask"]

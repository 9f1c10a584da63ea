"""Aggregator workers on a Ray cluster (``fedtempo serve --workers ray://HOST:PORT``): each
worker is a Ray actor holding one CPU, created when the policy asks for a worker and killed
when it is released, so that Ray's own scheduler places it and the cluster's CPUs are the pool.

The actor runs the same ``Fusion`` as a worker process and reads and writes the same
content-addressed store, which must therefore be reachable at the same path from the cluster's
nodes (one machine, or a shared file system). Commands and answers cross as JSON strings; the
tensors stay in the store as safetensors files.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fedtempo.service.workers import WorkerDied, checked, decoded


class _Actor:
    """Runs inside the Ray worker process."""

    def __init__(self, blobs: str) -> None:
        import torch

        from fedtempo.service.fuseworker import Fusion
        from fedtempo.service.store import Blobs

        torch.set_num_threads(1)
        self.fusion = Fusion(Blobs(Path(blobs)))

    def handle(self, line: str) -> str:
        from fedtempo.service.fuseworker import cpu_seconds

        t0 = time.perf_counter()
        try:
            answer = self.fusion.handle(json.loads(line))
        except Exception as exc:
            answer = {"op": "error", "error": f"{type(exc).__name__}: {exc}"}
        return json.dumps({**answer, "fuse_s": time.perf_counter() - t0, "cpu_s": cpu_seconds()})

    def ready(self) -> int:
        import os

        return os.getpid()


class RayWorker:
    def __init__(self, actor: Any, spawned: float) -> None:
        self.actor, self.spawned, self.ready = actor, spawned, spawned
        self.pid: int | None = None
        self.cpu_s = 0.0

    async def call(self, command: dict[str, Any]) -> dict[str, Any]:
        import ray

        try:
            line = await self.actor.handle.remote(json.dumps(command))
        except ray.exceptions.RayError as exc:
            raise WorkerDied(f"Ray aggregator actor lost: {exc}") from None
        return checked(decoded(self, line))

    async def stop(self) -> None:
        import ray

        ray.kill(self.actor)

    def kill(self) -> None:
        import ray

        ray.kill(self.actor)


class RayLauncher:
    """Workers as Ray actors on the cluster at ``address`` ("auto": the local one; a
    ``ray://`` address: Ray Client)."""

    name = "ray"

    def __init__(self, blobs: Path, address: str) -> None:
        try:
            import ray
        except ImportError:
            raise ValueError(
                "--workers ray://...: Ray is not installed (pip install 'fedtempo[ray]')"
            ) from None
        if not ray.is_initialized():
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ValueError(
                    f"--workers {address}: cannot reach the Ray cluster ({exc})"
                ) from None
        self.blobs = blobs
        self._remote: Any = ray.remote(num_cpus=1)(_Actor)

    def capacity(self) -> int:
        import ray

        resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
        return max(1, int(resources.get("CPU", 1)))

    async def spawn(self) -> RayWorker:
        import ray

        spawned = time.time()
        actor: Any = self._remote.remote(str(self.blobs))
        worker = RayWorker(actor, spawned)
        try:
            worker.pid = int(await actor.ready.remote())
        except ray.exceptions.RayError as exc:
            raise WorkerDied(f"a Ray aggregator actor failed to start: {exc}") from None
        worker.ready = time.time()
        return worker

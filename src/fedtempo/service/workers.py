"""Aggregator workers as processes the service starts and stops (SPEC C's "containers").

A ``Launcher`` starts a worker and hands back a ``Worker``: a channel of JSON commands and
answers (``fedtempo.service.fuseworker`` documents them). On this machine a worker is a process
of its own, started either warm or cold:

- ``ForkLauncher`` (the default, "warm"): forked by a template process (``multiprocessing``'s
  forkserver) that has imported torch and fedtempo once, as a container runtime starts a
  container from a cached image; a deploy is a fork (tens of milliseconds).
- ``ProcessLauncher`` ("cold"): a fresh interpreter that imports torch itself (about 1.5-2.5 s
  of CPU each), as a container pulled and started from nothing.

``RayLauncher`` (``fedtempo.service.rayworkers``) runs each as a Ray actor on an existing
cluster. The service measures each worker's deploy time (start
until ready) itself, and records every worker's life in the ledger (``workers`` table).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Protocol


class WorkerDied(RuntimeError):
    """The worker stopped answering (killed, crashed): it is replaced, nothing is lost."""


class WorkerError(RuntimeError):
    """The worker refused a command, with its reason."""


def decoded(worker: Worker, raw: str | bytes) -> dict[str, Any]:
    """A worker's answer read from its JSON; its reported CPU seconds are kept on ``worker``."""
    answer: dict[str, Any] = json.loads(raw)
    worker.cpu_s = float(answer.get("cpu_s", worker.cpu_s))
    return answer


def checked(answer: dict[str, Any]) -> dict[str, Any]:
    """``answer``, or WorkerError with the reason the worker gave for refusing the command."""
    if answer.get("op") == "error":
        raise WorkerError(str(answer.get("error")))
    return answer


class Worker(Protocol):
    """One running aggregator worker."""

    pid: int | None  # the OS process id (None where the worker is remote)
    spawned: float  # wall time the launch began
    ready: float  # wall time it answered "ready"
    cpu_s: float  # its CPU seconds so far, as it last reported them

    async def call(self, command: dict[str, Any]) -> dict[str, Any]:
        """Send one command, await its answer (WorkerDied, WorkerError)."""
        ...

    async def stop(self) -> None:
        """Ask it to exit (and make sure it has)."""
        ...


class Launcher(Protocol):
    name: str

    async def spawn(self) -> Worker: ...


class ProcessWorker:
    """A worker process on this machine, spoken to over its stdin and stdout."""

    def __init__(self, proc: asyncio.subprocess.Process, spawned: float) -> None:
        self.proc, self.spawned = proc, spawned
        self.pid: int | None = proc.pid
        self.ready = spawned
        self.cpu_s = 0.0
        self._lock = asyncio.Lock()

    async def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            raise WorkerDied(f"aggregator worker {self.pid} exited")
        return decoded(self, line)

    async def started(self) -> None:
        answer = await self._read()
        if answer.get("op") != "ready":
            raise WorkerDied(f"aggregator worker {self.pid} did not start: {answer}")
        self.ready = time.time()

    async def call(self, command: dict[str, Any]) -> dict[str, Any]:
        async with self._lock:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write((json.dumps(command) + "\n").encode())
                await self.proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                raise WorkerDied(f"aggregator worker {self.pid} exited") from None
            answer = await self._read()
        return checked(answer)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(WorkerDied, WorkerError, TimeoutError):
                await asyncio.wait_for(self.call({"op": "exit"}), timeout=5.0)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout=5.0)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    def kill(self) -> None:
        """SIGKILL (tests, and a worker that does not stop)."""
        if self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGKILL)


class ProcessLauncher:
    """Workers as child processes: ``python -m fedtempo.service.fuseworker BLOBS``."""

    name = "process"

    def __init__(self, blobs: Path) -> None:
        self.blobs = blobs

    async def spawn(self) -> ProcessWorker:
        spawned = time.time()
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fedtempo.service.fuseworker",
            str(self.blobs),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        worker = ProcessWorker(proc, spawned)
        try:
            await asyncio.wait_for(worker.started(), timeout=120.0)
        except (WorkerDied, TimeoutError):
            worker.kill()
            await proc.wait()
            raise WorkerDied("an aggregator worker failed to start") from None
        return worker


class ConnectionWorker:
    """A forked worker, spoken to over a ``multiprocessing`` connection (bytes of JSON; the
    connection's own pickling is never used). Blocking reads run in the launcher's threads."""

    def __init__(
        self, proc: BaseProcess, conn: Connection, spawned: float, pool: ThreadPoolExecutor
    ) -> None:
        self.proc, self.conn, self.spawned, self.pool = proc, conn, spawned, pool
        self.pid: int | None = proc.pid
        self.ready = spawned
        self.cpu_s = 0.0
        self._lock = asyncio.Lock()

    def _read(self) -> dict[str, Any]:
        try:
            raw = self.conn.recv_bytes()
        except (EOFError, OSError):
            raise WorkerDied(f"aggregator worker {self.pid} exited") from None
        return decoded(self, raw)

    def _roundtrip(self, command: dict[str, Any]) -> dict[str, Any]:
        try:
            self.conn.send_bytes(json.dumps(command).encode())
        except (BrokenPipeError, ConnectionResetError, OSError):
            raise WorkerDied(f"aggregator worker {self.pid} exited") from None
        return self._read()

    async def started(self) -> None:
        loop = asyncio.get_running_loop()
        answer = await loop.run_in_executor(self.pool, self._read)
        if answer.get("op") != "ready":
            raise WorkerDied(f"aggregator worker {self.pid} did not start: {answer}")
        self.ready = time.time()

    async def call(self, command: dict[str, Any]) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        async with self._lock:
            answer = await loop.run_in_executor(self.pool, self._roundtrip, command)
        return checked(answer)

    async def stop(self) -> None:
        if self.proc.exitcode is None:
            with contextlib.suppress(WorkerDied, WorkerError, TimeoutError):
                await asyncio.wait_for(self.call({"op": "exit"}), timeout=5.0)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self.pool, self.proc.join, 5.0)
            if self.proc.exitcode is None:
                self.kill()
                await loop.run_in_executor(self.pool, self.proc.join, 5.0)
        self.conn.close()

    def kill(self) -> None:
        if self.proc.exitcode is None and self.proc.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)


# what the template imports (the main module too: a forked child then finds it loaded instead
# of re-running it)
TEMPLATE_PRELOAD = ["__main__", "fedtempo.service.fuseworker"]


def start_template() -> None:
    """Start the warm workers' template process now, without waiting for its imports (a
    server calls this first thing, so that the template imports torch while the server does)."""
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(TEMPLATE_PRELOAD)
    forkserver.ensure_running()


class ForkLauncher:
    """Warm workers: forked from a template process that imported the fusion code once."""

    name = "forked"

    def __init__(self, blobs: Path) -> None:
        self.blobs = blobs
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(TEMPLATE_PRELOAD)
        self.pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="fedtempo-worker-io")

    async def warm(self) -> None:
        """Start the template process now, so that the first deploy is a fork too."""
        await asyncio.get_running_loop().run_in_executor(self.pool, start_template)

    async def spawn(self) -> ConnectionWorker:
        from fedtempo.service.fuseworker import serve_connection

        spawned = time.time()
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=serve_connection, args=(str(self.blobs), child), daemon=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.pool, proc.start)  # the first one starts the template
        child.close()
        worker = ConnectionWorker(proc, parent, spawned, self.pool)
        try:
            await asyncio.wait_for(worker.started(), timeout=120.0)
        except (WorkerDied, TimeoutError):
            worker.kill()
            raise WorkerDied("an aggregator worker failed to start") from None
        return worker

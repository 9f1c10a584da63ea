"""A full disk and a read-only state directory (issue 20), on a small tmpfs mounted for the
run (root only); shared by ``test_disk.py`` and ``benchmarks/w_chaos.py``."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.chaos.harness import Recorder, chaos_job, stream, verdict
from tests.service.live import Server

JSON = {"content-type": "application/json"}


class NoTmpfs(RuntimeError):
    """This machine does not let us mount a tmpfs (not root, or no privilege)."""


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise NoTmpfs(f"cannot mount a tmpfs here ({r.stderr.strip()}); needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Write zeros to ``disk/filler`` until the disk refuses. (Opening may already fail, if the
    server's own files took the last free pages first: the disk is full either way.)"""
    filler = disk / "filler"
    with contextlib.suppress(OSError), open(filler, "wb") as f:
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    return filler


def remount(disk: Path, mode: str) -> None:
    """(The killed server's aggregator workers may take a moment to notice and exit.)"""
    end = time.monotonic() + 20
    while True:
        r = subprocess.run(["mount", "-o", f"remount,{mode}", str(disk)], capture_output=True)
        if r.returncode == 0:
            return
        if time.monotonic() > end:
            raise RuntimeError(f"cannot remount {disk} {mode}: {r.stderr!r}")
        time.sleep(0.2)


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(what)
        time.sleep(0.05)


def disk_run(root: Path) -> dict[str, Any]:
    """Parties upload; the disk fills; space returns; the server is killed and the disk made
    read-only; then writable again. What the server did at each step."""
    out: dict[str, Any] = {}
    # the state directory is the whole disk. 32 MiB: one loaded CI run found 16 MiB already full
    # when the test began to fill it (normally the server holds about 1.3 MiB there, mostly its
    # write-ahead log; what took the rest was not found)
    with tmpfs(root / "state", "32m") as disk:
        srv = Server(disk)
        srv.start()
        job, parties = chaos_job(srv.url, srv.token, 2, give_up_s=120.0)
        rec, stop, errors = Recorder(), threading.Event(), []
        t = threading.Thread(target=stream, args=(parties, rec, stop, errors))
        t.start()
        try:
            _wait(lambda: len(rec.acked) >= 4, 60, "no acks before the disk filled")
            filler = fill(disk)
            time.sleep(1.0)  # what was in flight settles
            n = len(rec.acked)
            time.sleep(2.0)
            out["acked_while_full"] = len(rec.acked) - n
            out["health_while_full"] = httpx.get(srv.url + "/v1/health").status_code
            path, body = f"/v1/jobs/{job}/work", b'{"samples": 4, "wait_s": 0}'
            h = parties[0].cred.headers("POST", path, body, time.time())
            r = httpx.post(srv.url + path, content=body, headers=h | JSON)
            out["answer_while_full"] = (r.status_code, r.headers.get("retry-after"), r.text)
            filler.unlink(missing_ok=True)
            n = len(rec.acked)
            _wait(lambda: len(rec.acked) >= n + 4, 60, "no acks once space returned")
            out["recovered"] = True
        finally:
            stop.set()
            t.join(150)
            srv.kill()
        out["errors"] = [repr(e) for e in errors]
        out["tracebacks_in_log"] = srv.log.read_text().count("Traceback")
        remount(disk, "ro")
        try:
            srv.start()
            out["read_only_start"] = "started"
            srv.kill()
        except RuntimeError as exc:
            out["read_only_start"] = str(exc)
        out["tracebacks_in_log"] += srv.log.read_text().count("Traceback")
        remount(disk, "rw")
        srv.start()  # and starts, collecting what the kill left half-written, once it is not
        srv.kill()
        out["verdict"] = verdict(srv.state, job, rec)
    return out

"""The chaos harness (issue 20), shared by ``tests/chaos`` and ``benchmarks/w_chaos.py``.

- ``Recorder``: every delta a party tried to upload (by party and key) and every update the
  server acknowledged (a 2xx answer).
- ``chaos_job``: a FedBuff job on a running server and parties whose "training" is a delta drawn
  from their own (party, task) stream, so a retried upload carries the same bits.
- ``FaultyProxy``: a loopback TCP proxy between parties and server that passes, delays, drops,
  truncates or resets connections, drawn per connection from a seeded generator.
- ``verdict``: after a run, from the state directory alone: acknowledged updates lost, updates
  stored twice, the model against its recomputation from the recorded deltas, SQLite's
  ``integrity_check``, missing/truncated and orphan blobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import socket
import sqlite3
import struct
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import torch

from fedtempo.experiment.deploy import blueprint
from fedtempo.service import auth, wire
from fedtempo.service.client import Admin, tls_context
from fedtempo.service.party import Party, Trained, WorkTask
from tests.service.helpers import tiny_spec

BUFFER = 3
SERVER = {
    "algorithm": "fedbuff",
    "concurrency": 4,
    "max_updates": 1_000_000,
    "fedbuff": {"buffer_size": BUFFER},
}
SPEC = tiny_spec(SERVER)


@dataclass
class Recorder:
    tried: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
    acked: list[tuple[str, str]] = field(default_factory=list)
    refused: dict[int, int] = field(default_factory=dict)  # status -> count of 4xx/5xx answers
    lock: threading.Lock = field(default_factory=threading.Lock)


def delta_of(party: str, task: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(zlib.crc32(f"{party}/{task}".encode()))
    return torch.randn(15, generator=gen)


def chaos_job(
    url: str,
    token: str,
    n: int,
    party_url: str | None = None,
    give_up_s: float = 120.0,
    ca: Path | None = None,
) -> tuple[str, list[Party]]:
    """A FedBuff job (buffer 3) with ``n`` enrolled parties that reach the server at
    ``party_url`` (a proxy, say) or ``url`` (over TLS trusting ``ca``, if given)."""
    admin = Admin(url, token, ca=ca)
    job = admin.create_job("chaos", SPEC)
    parties = []
    server = party_url or url
    for i, cred in enumerate(enrolled(admin, job, n, server)):
        # a connection per request: every request meets the proxy's draw afresh
        client = httpx.Client(
            base_url=server,
            timeout=30.0,
            limits=httpx.Limits(max_keepalive_connections=0),
            verify=tls_context(ca),
        )

        def train(task: WorkTask, start: torch.Tensor, name: str = f"p{i}") -> Trained:
            return Trained(delta_of(name, task.task), 4, 1, 0.3)

        parties.append(
            Party(cred, train, 4, wait_s=1.0, max_backoff_s=0.5, give_up_s=give_up_s, client=client)
        )
    admin.http.close()
    return job, parties


def enrolled(admin: Admin, job: str, n: int, server: str) -> list[auth.Credential]:
    """Parties p0..p{n-1} enrolled in ``job``, each with a fresh key, reaching ``server``."""
    creds = []
    for i in range(n):
        key = auth.new_key()
        admin.enroll(job, f"p{i}", auth.b64(auth.public_key_bytes(key)))
        creds.append(auth.Credential(server, job, f"p{i}", auth.private_bytes(key)))
    return creds


def stream(
    parties: list[Party], rec: Recorder, stop: threading.Event, errors: list[BaseException]
) -> None:
    """Ask and upload round-robin until ``stop``; each delta is recorded before it is sent."""
    try:
        while not stop.is_set():
            for p in parties:
                task = p.ask()
                if not isinstance(task, WorkTask):
                    continue
                trained = p.train(task, torch.zeros(15))
                with rec.lock:
                    rec.tried[(p.cred.party, task.task)] = trained.delta
                status, _ = p.upload(task, trained)
                with rec.lock:
                    if status < 300:
                        rec.acked.append((p.cred.party, task.task))
                    else:
                        rec.refused[status] = rec.refused.get(status, 0) + 1
    except BaseException as exc:  # surfaced by the caller
        errors.append(exc)


def verdict(state: Path, job: str, rec: Recorder) -> dict[str, int]:
    """What the state directory says of the run (every figure should be 0 but ``stored``)."""
    db = sqlite3.connect(state / "ledger.sqlite")
    try:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        rows = db.execute(
            "SELECT p.name, u.key, u.status, u.seq FROM updates u JOIN parties p "
            "ON p.job=u.job AND p.id=u.party WHERE u.job=? ORDER BY u.seq",
            (job,),
        ).fetchall()
        version, accepted = db.execute(
            "SELECT version, accepted FROM jobs WHERE id=?", (job,)
        ).fetchone()
        current = db.execute(
            "SELECT sha FROM versions WHERE job=? AND version=?", (job, version)
        ).fetchone()
        live = {r[0] for r in db.execute(Q_REFERENCED)}
    finally:
        db.close()
    stored = [(name, key) for name, key, _, _ in rows]
    applied = [(name, key) for name, key, status, _ in rows if status == "applied"]
    missing = truncated = 0
    for sha in live:
        path = state / "blobs" / sha[:2] / sha
        if not path.is_file():
            missing += 1
        elif hashlib.sha256(path.read_bytes()).hexdigest() != sha:
            truncated += 1
    on_disk = {p.name for p in (state / "blobs").glob("*/*") if p.parent.name != "tmp"}
    unknown = [k for k in stored if k not in rec.tried]
    mismatch = 1
    if current is not None and not unknown and missing == 0:
        bp = blueprint(SPEC)
        model, _ = wire.parse(
            bp.layout, (state / "blobs" / current[0][:2] / current[0]).read_bytes()
        )
        expected = bp.initial.clone()
        for start in range(0, len(applied) - len(applied) % BUFFER, BUFFER):
            group = [rec.tried[k] for k in applied[start : start + BUFFER]]
            expected = expected + sum(d / BUFFER for d in group)
        mismatch = int(not torch.allclose(model, expected, atol=1e-4))
    return {
        "stored": len(stored),
        "acked": len(rec.acked),
        "lost": len(set(rec.acked) - set(stored)),
        "twice": len(stored) - len(set(stored)) + int(accepted != len(stored)),
        "version_off": int(version != len(applied) // BUFFER or len(applied) % BUFFER != 0),
        "model_mismatch": mismatch,
        "unknown": len(unknown),
        "integrity_bad": int(integrity != "ok"),
        "blobs_missing": missing,
        "blobs_truncated": truncated,
        "blobs_orphan": len(on_disk - live),
    }


Q_REFERENCED = (
    "SELECT sha FROM versions UNION SELECT sha FROM updates WHERE status='buffered' "
    "UNION SELECT partial FROM rounds WHERE partial IS NOT NULL"
)


def bad_figures(v: dict[str, int]) -> dict[str, int]:
    return {k: n for k, n in v.items() if k not in ("stored", "acked") and n}


# ---- processes ------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(x) for x in (task / "children").read_text().split()]
    return out


def worker_pids(server_pid: int) -> list[int]:
    """The server's aggregator workers: the children of its fork template (forked workers) and
    any other grandchild."""
    return [g for c in children(server_pid) for g in children(c)]


def kill_a_worker(server_pid: int, rng: np.random.Generator) -> bool:
    pids = worker_pids(server_pid)
    if not pids:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(int(rng.choice(pids)), signal.SIGKILL)
    return True


# ---- the proxy ------------------------------------------------------------------------------

FAULTS = ("pass", "delay", "drop", "truncate", "reset")


class FaultyProxy:
    """Loopback TCP proxy to ``127.0.0.1:target``. Each connection draws a fault: ``pass``;
    ``delay`` (each chunk held ``delay_s``); ``drop`` (closed before a byte is forwarded);
    ``truncate`` (closed cleanly after a random number of bytes in one direction); ``reset``
    (the same, then an RST). ``rates`` give the draw's probabilities."""

    def __init__(self, target: int, rates: dict[str, float], seed: int, delay_s: float = 0.2):
        self.target, self.delay_s = target, delay_s
        total = sum(rates.values())
        self.p = [rates.get(f, 0.0) / total for f in FAULTS]
        self.rng = np.random.default_rng(seed)
        self.counts = dict.fromkeys(FAULTS, 0)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> str:
        self._thread.start()
        self._ready.wait(10)
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        fault = FAULTS[int(self.rng.choice(len(FAULTS), p=self.p))]
        self.counts[fault] += 1
        if fault == "drop":
            _abort(cw, reset=False)
            return
        try:
            sr, sw = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            _abort(cw, reset=True)
            return
        budget = int(self.rng.integers(0, 1024)) if fault in ("truncate", "reset") else -1
        upstream = bool(self.rng.integers(0, 2))
        done = asyncio.Event()

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, limited: bool) -> None:
            nonlocal budget
            try:
                while chunk := await r.read(65536):
                    if fault == "delay":
                        await asyncio.sleep(self.delay_s)
                    if limited and budget >= 0:
                        if len(chunk) > budget:
                            w.write(chunk[:budget])
                            await w.drain()
                            return
                        budget -= len(chunk)
                    w.write(chunk)
                    await w.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                done.set()

        tasks = [
            asyncio.ensure_future(pipe(cr, sw, upstream)),
            asyncio.ensure_future(pipe(sr, cw, not upstream)),
        ]
        await done.wait()
        for t in tasks:
            t.cancel()
        reset = fault == "reset"
        _abort(cw, reset)
        _abort(sw, reset)


def _abort(w: asyncio.StreamWriter, reset: bool) -> None:
    sock = w.get_extra_info("socket")
    if reset and sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        w.close()


__all__ = ["FaultyProxy", "Recorder", "chaos_job", "stream", "verdict"]

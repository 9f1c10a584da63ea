"""SIGKILL the server while parties upload, at random moments and at every failpoint, restart
on the same state: every acknowledged update is there exactly once, the ledger is intact, no
blob is missing or truncated (SERVICE.md promise 1)."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fedtempo.service import auth
from fedtempo.service.client import Admin
from fedtempo.service.party import Party, Trained, WorkTask
from tests.service.helpers import tiny_spec
from tests.service.live import Server

pytestmark = pytest.mark.slow
SERVER = {
    "algorithm": "fedbuff",
    "concurrency": 3,
    "max_updates": 10_000,
    "fedbuff": {"buffer_size": 3},
}


def _parties(srv: Server, n: int) -> tuple[str, list[Party]]:
    admin = Admin(srv.url, srv.token)
    job = admin.create_job("crash", tiny_spec(SERVER))
    parties = []
    for i in range(n):
        key = auth.new_key()
        admin.enroll(job, f"p{i}", auth.b64(auth.public_key_bytes(key)))
        cred = auth.Credential(srv.url, job, f"p{i}", auth.private_bytes(key))
        gen = torch.Generator().manual_seed(i)

        def train(task: WorkTask, start: torch.Tensor, gen: torch.Generator = gen) -> Trained:
            return Trained(torch.randn(15, generator=gen), 4, 1, 0.3)

        parties.append(Party(cred, train, 4, wait_s=1.0, max_backoff_s=0.5, give_up_s=90.0))
    return job, parties


def _check(state: Path, job: str, acked: list[tuple[str, str]]) -> None:
    db = sqlite3.connect(state / "ledger.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = db.execute(
        "SELECT p.name, u.key, u.status, u.sha FROM updates u JOIN parties p "
        "ON p.job=u.job AND p.id=u.party WHERE u.job=?",
        (job,),
    ).fetchall()
    stored = [(name, key) for name, key, _, _ in rows]
    assert len(stored) == len(set(stored))  # nothing twice
    assert set(acked) <= set(stored)  # every acknowledged update is there
    accepted, version = db.execute(
        "SELECT accepted, version FROM jobs WHERE id=?", (job,)
    ).fetchone()
    assert accepted == len(rows)
    applied = sum(1 for r in rows if r[2] == "applied")
    assert version == applied // 3 and applied % 3 == 0  # buffer of 3: versions follow updates
    live = db.execute(
        "SELECT sha FROM versions WHERE job=? UNION SELECT sha FROM updates "
        "WHERE job=? AND status='buffered'",
        (job, job),
    ).fetchall()
    for (sha,) in live:
        data = (state / "blobs" / sha[:2] / sha).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha  # present, not truncated
    db.close()


def _upload_stream(
    parties: list[Party],
    acked: list[tuple[str, str]],
    stop: threading.Event,
    errors: list[BaseException],
) -> None:
    try:
        while not stop.is_set():
            for p in parties:
                task = p.ask()
                if isinstance(task, WorkTask):
                    status, _ = p.upload(task, p.train(task, torch.zeros(15)))
                    if status == 200:
                        acked.append((p.cred.party, task.task))
    except BaseException as exc:  # surfaced by the test
        errors.append(exc)


def test_random_sigkills_lose_no_acknowledged_update(tmp_path: Path) -> None:
    srv = Server(tmp_path / "state")
    srv.start()
    job, parties = _parties(srv, 3)
    acked: list[tuple[str, str]] = []
    stop, errors = threading.Event(), []
    worker = threading.Thread(target=_upload_stream, args=(parties, acked, stop, errors))
    worker.start()
    rng = np.random.default_rng(0)
    kills = 0
    try:
        for _ in range(4):
            # kill mid-stream: once the restarted server (and its aggregator workers) took
            # updates again, at a random moment of the next second
            seen, end = len(acked), time.monotonic() + 60.0
            while len(acked) < seen + 2 and time.monotonic() < end:
                time.sleep(0.05)
            time.sleep(float(rng.uniform(0.0, 1.0)))
            srv.kill()
            kills += 1
            srv.start()
        time.sleep(1.0)
    finally:
        stop.set()
        worker.join(120)
        srv.kill()
    assert not errors, errors
    assert kills == 4 and len(acked) >= 10
    _check(srv.state, job, acked)


@pytest.mark.parametrize("point", ["after-blob-write", "before-commit", "before-ack"])
def test_a_kill_at_each_failpoint_is_survived(tmp_path: Path, point: str) -> None:
    srv = Server(tmp_path / "state")
    # the upload's failpoints fire at the upload itself; a commit's is armed after the set-up
    early = point != "before-commit"
    srv.start(failpoint=point if early else None)
    job, parties = _parties(srv, 1)
    p = parties[0]
    task = p.ask()
    assert isinstance(task, WorkTask)
    if not early:
        srv.kill()
        srv.start(failpoint=point)
    answer: dict[str, object] = {}
    t = threading.Thread(
        target=lambda: answer.update(
            zip(("status", "body"), p.upload(task, p.train(task, torch.zeros(15))), strict=True)
        )
    )
    t.start()
    assert srv.wait_dead() != 0  # the server killed itself at the failpoint
    srv.start()  # no failpoint now; the party's retry gets through
    t.join(90)
    srv.kill()
    assert answer["status"] == 200
    _check(srv.state, job, [("p0", task.task)])
    db = sqlite3.connect(srv.state / "ledger.sqlite")
    assert db.execute("SELECT COUNT(*) FROM updates").fetchone()[0] == 1
    blobs = list((srv.state / "blobs").glob("*/*"))
    db.close()
    assert len(blobs) == 2  # the initial model and the buffered update: no orphan left behind


def test_tls_with_a_self_signed_certificate(tmp_path: Path) -> None:
    import httpx

    srv = Server(tmp_path / "state", tls=True)
    srv.start()
    try:
        cert = srv.state / "tls" / "server.crt"
        assert Admin(srv.url, srv.token, ca=cert).jobs() == []
        with pytest.raises(httpx.HTTPError):  # not trusted without the certificate
            httpx.get(srv.url + "/v1/health", timeout=5)
        with pytest.raises(httpx.HTTPError):  # no plaintext on the TLS port
            httpx.get(srv.url.replace("https", "http") + "/v1/health", timeout=5)
    finally:
        srv.kill()
    assert srv.token not in srv.log.read_text()  # the credential never reaches the log

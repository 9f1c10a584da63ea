"""The payload parser, the store's schema versioning and blobs, the TLS bind rule."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtempo.service import auth, wire
from fedtempo.service.server import ServeError, check_tls, self_signed
from fedtempo.service.store import SCHEMA_VERSION, Store, StoreError

LAYOUT = wire.Layout((("w", (3, 4)), ("b", (3,))))


def test_encode_parse_round_trip_is_exact() -> None:
    v = torch.randn(15, generator=torch.Generator().manual_seed(0))
    out, meta = wire.parse(LAYOUT, wire.encode(LAYOUT, v, {"task": "t"}))
    assert torch.equal(out, v) and meta == {"task": "t"}


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_payloads_raise_only_wire_errors(data: st.DataObject) -> None:
    good = bytearray(wire.encode(LAYOUT, torch.ones(15), {"task": "t"}))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(good) - 1))
        good[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(good)))
    body = bytes(good[:cut])
    try:
        vector, _ = wire.parse(LAYOUT, body)
    except wire.WireError as exc:
        assert exc.code and str(exc)
    else:
        assert vector.shape == (15,) and bool(torch.isfinite(vector).all())


def test_schema_is_versioned_and_a_newer_one_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.meta("schema_version") == str(SCHEMA_VERSION)
    store.close()
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer"):
        Store(tmp_path)


def test_blobs_are_content_addressed_and_orphans_collected(tmp_path: Path) -> None:
    store = Store(tmp_path)
    sha = store.put_blob(b"hello")
    assert store.get_blob(sha) == b"hello" and store.put_blob(b"hello") == sha
    (store.blobs / "tmp" / "x.part").write_bytes(b"half")
    assert store.collect_garbage() == 2  # the unreferenced blob and the temporary file
    assert not store.blob_path(sha).exists()
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_plain_http_only_on_loopback(tmp_path: Path) -> None:
    check_tls("127.0.0.1", None, None, False)
    check_tls("::1", None, None, False)
    with pytest.raises(ServeError, match="--tls-self-signed"):
        check_tls("0.0.0.0", None, None, False)
    check_tls("0.0.0.0", None, None, True)
    cert, key, fingerprint = self_signed(tmp_path, "127.0.0.1")
    assert cert.read_bytes().startswith(b"-----BEGIN CERTIFICATE") and len(fingerprint) == 95
    assert (key.stat().st_mode & 0o777) == 0o600


def test_credential_files_are_private_and_round_trip(tmp_path: Path) -> None:
    key = auth.new_key()
    cred = auth.Credential("http://127.0.0.1:1", "job", "alice", auth.private_bytes(key))
    cred.write(tmp_path / "c.json")
    assert ((tmp_path / "c.json").stat().st_mode & 0o777) == 0o600
    assert auth.Credential.read(tmp_path / "c.json") == cred
    msg = auth.signed_message("PUT", "/p", "alice", "1", "n", b"body")
    sig = key.sign(msg)
    assert auth.verify(auth.public_key_bytes(key), sig, msg)
    assert not auth.verify(auth.public_key_bytes(key), sig, msg + b"x")


def test_a_job_that_no_longer_builds_does_not_take_the_others_down(tmp_path: Path) -> None:
    import json

    from tests.service.helpers import InProcess, tiny_spec

    svc = InProcess(tmp_path / "s")
    good = svc.create(tiny_spec({"algorithm": "fedavg", "rounds": 1, "clients_per_round": 1}))
    bad = svc.create(tiny_spec({"algorithm": "fedavg", "rounds": 1, "clients_per_round": 1}))
    token = svc.token
    svc.close()
    db = sqlite3.connect(tmp_path / "s" / "ledger.sqlite")
    spec = json.loads(db.execute("SELECT spec FROM jobs WHERE id=?", (bad,)).fetchone()[0])
    spec["model"]["name"] = "gone"  # as if the model zoo had changed
    db.execute("UPDATE jobs SET spec=? WHERE id=?", (json.dumps(spec), bad))
    db.commit()
    db.close()
    again = InProcess(tmp_path / "s", token=token)
    assert again.client.get(f"/v1/jobs/{good}", headers=again.admin()).status_code == 200
    r = again.client.get(f"/v1/jobs/{bad}", headers=again.admin())
    assert r.status_code == 409 and "cannot be loaded" in r.json()["error"]
    again.close()


def test_an_upload_and_the_parties_view_cost_the_same_on_a_young_and_an_old_job(
    tmp_path: Path,
) -> None:
    # measured in W-chaos's load: the query for the buffered updates in arrival order walked
    # every update the job ever stored (SQLite took the (job, seq) index for the ORDER BY), so
    # an upload's latency grew with the job's age; the dashboard's parties view walked them all
    # too. Counted in SQLite VM steps, not seconds.
    from fedtempo.experiment.deploy import blueprint
    from fedtempo.service import views
    from fedtempo.service.asyncjob import AsyncJob
    from fedtempo.service.core import Service
    from tests.service.helpers import tiny_spec

    service = Service(tmp_path / "state", blueprint)
    server = {"algorithm": "fedbuff", "concurrency": 2, "max_updates": 10**9}
    spec = tiny_spec(server | {"fedbuff": {"buffer_size": 10}})
    job = service.job(service.create("old", spec))
    assert isinstance(job, AsyncJob)
    db = service.store.db
    with service.store.tx():
        db.execute(
            "INSERT INTO parties (job, name, id, public_key) VALUES (?,?,?,?)",
            (job.id, "p0", 0, b"k" * 32),
        )

    def cost(work: Callable[[], object]) -> int:
        count = [0]

        def tick() -> int:
            count[0] += 1
            return 0

        db.set_progress_handler(tick, 1)
        try:
            work()
        finally:
            db.set_progress_handler(None, 1)
        return count[0]

    def steps() -> tuple[int, int]:
        return cost(lambda: job.command([])), cost(lambda: views.parties(job, 0.0))

    def add(first: int, n: int, status: str) -> None:
        rows = [
            (job.id, 0, f"k{i}", i, f"t{i}", i, None, "0" * 64, 4, 1, 0.3, 1.0, 0.0, status, "{}")
            for i in range(first, first + n)
        ]
        with service.store.tx():
            db.executemany(f"INSERT INTO updates VALUES ({','.join('?' * 15)})", rows)

    add(0, 3, "buffered")
    young = steps()
    add(3, 20_000, "applied")  # the history of a job that has run for hours
    old = steps()
    assert all(o < 2 * y + 50 for y, o in zip(young, old, strict=True)), (young, old)
    assert views.parties(job, 0.0)[0]["staleness"] == job.current_version() - 20_002

"""Every refusal is a clear 4xx with a reason, and changes nothing (SERVICE.md promise 4)."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from fedtempo.service import auth, wire
from fedtempo.service.jobs import Envelope
from tests.service.helpers import InProcess, tiny_spec

SERVER = {
    "algorithm": "fedbuff",
    "concurrency": 2,
    "max_updates": 50,
    "fedbuff": {"buffer_size": 2},
}


@pytest.fixture
def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    svc = InProcess(tmp_path / "state")
    job = svc.create(tiny_spec(SERVER))
    other = svc.create(tiny_spec(SERVER))
    cred = svc.enroll(job, "alice")
    outsider = svc.enroll(other, "alice")  # same name, another job's key
    r = _signed(
        svc,
        cred,
        "POST",
        f"/v1/jobs/{job}/work",
        b'{"samples": 5, "wait_s": 0}',
        "application/json",
    )
    task = r.json()
    assert task["task"] == "a0-p0"
    yield svc, job, cred, outsider, task
    svc.close()


def _signed(
    svc: InProcess,
    cred: auth.Credential,
    method: str,
    path: str,
    body: bytes,
    ctype: str,
    now: float | None = None,
    tweak: Callable[[dict[str, str]], None] | None = None,
) -> Any:
    h = cred.headers(method, path, body, time.time() if now is None else now)
    h["content-type"] = ctype
    if tweak:
        tweak(h)
    return svc.client.request(method, path, content=body, headers=h)


def _payload(
    layout: wire.Layout, work: dict[str, Any], vector: torch.Tensor | None = None, **meta: str
) -> bytes:
    env = Envelope(work["task"], work["base_version"], 5, 1, 0.1).to_meta()
    env.update(meta)
    return wire.encode(layout, torch.ones(layout.numel) if vector is None else vector, env)


def _snapshot(svc: InProcess) -> tuple[Any, ...]:
    db = svc.service.store.db
    tables = ("jobs", "updates", "versions", "tasks", "parties")
    out = [db.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in tables]
    blobs = sorted(p.name for p in (svc.service.store.blobs).glob("*/*"))
    return (*[[tuple(r) for r in rows] for rows in out], blobs)


def _f64(layout: wire.Layout, task: dict[str, Any]) -> bytes:
    from safetensors.torch import save

    tensors = {n: torch.ones(s, dtype=torch.float64) for n, s in layout.tensors}
    return bytes(save(tensors, metadata=Envelope(task["task"], 0, 5, 1, 0.1).to_meta()))


def _huge_header(layout: wire.Layout, task: dict[str, Any]) -> bytes:
    return struct.pack("<Q", 1 << 40) + b"{}"


def _lying_header(layout: wire.Layout, task: dict[str, Any]) -> bytes:
    good = _payload(layout, task)
    (n,) = struct.unpack("<Q", good[:8])
    header = json.loads(good[8 : 8 + n])
    name = layout.tensors[0][0]
    header[name]["data_offsets"] = [0, 10**9]
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + good[8 + n :]


CASES: dict[str, tuple[Callable[..., bytes], int, str]] = {
    "wrong shape": (
        lambda L, t: wire.encode(
            wire.Layout(((L.tensors[0][0], (15,)),)),
            torch.ones(15),
            Envelope(t["task"], 0, 5, 1, 0.1).to_meta(),
        ),
        422,
        "tensor names",
    ),
    "wrong dtype": (_f64, 422, "dtype"),
    "nan": (lambda L, t: _payload(L, t, torch.full((L.numel,), float("nan"))), 422, "non-finite"),
    "inf": (lambda L, t: _payload(L, t, torch.full((L.numel,), float("inf"))), 422, "non-finite"),
    "unknown base version": (lambda L, t: _payload(L, t, base_version="7"), 409, "base version"),
    "truncated": (lambda L, t: _payload(L, t)[:-9], 422, "bytes"),
    "garbage": (lambda L, t: b"\x00\x01not a tensor file", 422, "safetensors"),
    "huge header": (_huge_header, 422, "header"),
    "header lies about sizes": (_lying_header, 422, "offsets"),
    "bad metadata": (lambda L, t: _payload(L, t, samples="many"), 422, "metadata"),
    "wrong task": (lambda L, t: _payload(L, t, task="a9-p0"), 409, "late"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_payloads_are_refused_with_a_reason_and_change_nothing(setup, case: str) -> None:  # type: ignore[no-untyped-def]
    svc, job, cred, _, task = setup
    layout = svc.service.jobs[job].bp.layout
    make, status, words = CASES[case]
    before = _snapshot(svc)
    r = _signed(
        svc,
        cred,
        "PUT",
        f"/v1/jobs/{job}/updates/k1",
        make(layout, task),
        "application/octet-stream",
    )
    assert r.status_code == status, r.text
    assert words in r.json()["error"]
    assert _snapshot(svc) == before
    # counted in the job's status by category
    rejected = svc.client.get(f"/v1/jobs/{job}", headers=svc.admin()).json()["updates"]["rejected"]
    assert sum(rejected.values()) == 1


def test_authentication_negatives(setup) -> None:  # type: ignore[no-untyped-def]
    svc, job, cred, outsider, task = setup
    layout = svc.service.jobs[job].bp.layout
    body, path = _payload(layout, task), f"/v1/jobs/{job}/updates/k1"
    octet = "application/octet-stream"
    before = _snapshot(svc)
    cases = {
        "no signature": svc.client.put(path, content=body, headers={"content-type": octet}),
        "another job's credential": _signed(
            svc,
            auth.Credential(cred.server, job, "alice", outsider.private_key),
            "PUT",
            path,
            body,
            octet,
        ),
        "expired timestamp": _signed(svc, cred, "PUT", path, body, octet, now=time.time() - 400),
        "tampered body": _signed(
            svc,
            cred,
            "PUT",
            path,
            body,
            octet,
            tweak=lambda h: h.update(
                auth.Credential.headers(cred, "PUT", path, body[:-4] + b"\0\0\0\0", time.time())
            ),
        ),
        "garbage signature": _signed(
            svc, cred, "PUT", path, body, octet, tweak=lambda h: h.update({auth.H_SIG: "%%%"})
        ),
        "party credential on an admin endpoint": _signed(
            svc, cred, "GET", f"/v1/jobs/{job}", b"", octet
        ),
        "wrong admin key": svc.client.get("/v1/jobs", headers={"authorization": "Bearer nope"}),
    }
    for name, r in cases.items():
        assert r.status_code == 401, (name, r.status_code, r.text)
        assert r.json()["error"], name
    assert _snapshot(svc) == before
    # a replayed request: the first is accepted, its exact copy refused
    h = cred.headers("PUT", path, body, time.time())
    h["content-type"] = octet
    first = svc.client.put(path, content=body, headers=h)
    assert first.status_code == 200, first.text
    after = _snapshot(svc)
    replay = svc.client.put(path, content=body, headers=h)
    assert replay.status_code == 401 and "replayed" in replay.json()["error"]
    assert _snapshot(svc) == after


def test_transport_level_refusals(setup) -> None:  # type: ignore[no-untyped-def]
    svc, job, cred, _, task = setup
    layout = svc.service.jobs[job].bp.layout
    path = f"/v1/jobs/{job}/updates/k1"
    before = _snapshot(svc)
    wrong_type = _signed(svc, cred, "PUT", path, _payload(layout, task), "application/json")
    assert wrong_type.status_code == 415 and "content type" in wrong_type.json()["error"]
    big = b"\0" * (layout.max_bytes + 1)
    oversized = _signed(svc, cred, "PUT", path, big, "application/octet-stream")
    assert oversized.status_code == 413 and "limit" in oversized.json()["error"]
    bad_key = _signed(
        svc, cred, "PUT", f"/v1/jobs/{job}/updates/a%20b", b"", "application/octet-stream"
    )
    assert bad_key.status_code == 422
    nojob = svc.client.get("/v1/jobs/nope", headers=svc.admin())
    assert nojob.status_code == 404 and "no job" in nojob.json()["error"]
    bad_spec = svc.client.post(
        "/v1/jobs",
        json={"name": "x", "spec": {"server": {"algorithm": "pruned"}}},
        headers=svc.admin(),
    )
    assert bad_spec.status_code == 422 and "job spec" in bad_spec.json()["error"]
    huge = {
        "name": "x",
        "model": {"name": "logreg"},
        "server": {"algorithm": "fedavg"},
        "input_shape": [2048, 2048],
        "num_classes": 100,
    }
    too_big = svc.client.post("/v1/jobs", json={"name": "x", "spec": huge}, headers=svc.admin())
    assert too_big.status_code == 422 and "parameters" in too_big.json()["error"]
    not_json = svc.client.post(
        "/v1/jobs", content=b"{", headers={**svc.admin(), "content-type": "application/json"}
    )
    assert not_json.status_code == 422
    assert _snapshot(svc)[1:] == before[1:]


def test_a_retried_upload_counts_once(setup) -> None:  # type: ignore[no-untyped-def]
    svc, job, cred, _, task = setup
    layout = svc.service.jobs[job].bp.layout
    body = _payload(layout, task)
    path = f"/v1/jobs/{job}/updates/k1"
    first = _signed(svc, cred, "PUT", path, body, "application/octet-stream")
    again = _signed(svc, cred, "PUT", path, body, "application/octet-stream")
    assert first.status_code == again.status_code == 200
    assert again.json()["duplicate"] is True
    assert svc.client.get(f"/v1/jobs/{job}", headers=svc.admin()).json()["updates"]["accepted"] == 1
    assert "openapi" in svc.client.get("/openapi.json").json()


def test_evaluation_reports_are_checked(tmp_path: Path) -> None:
    svc = InProcess(tmp_path / "state")
    job = svc.create(tiny_spec({"algorithm": "fedavg", "rounds": 2}))
    url = f"/v1/jobs/{job}/evaluations"
    good = {"version": 0, "accuracy": 0.4, "samples": 10}
    assert svc.client.post(url, json=good).status_code == 401  # admin only
    for bad, reason in (
        ({**good, "version": 3}, "not published"),
        ({**good, "accuracy": 1.5}, "accuracy"),
        ({**good, "samples": 0}, "samples"),
        ({**good, "loss": -1.0}, "loss"),
    ):
        r = svc.client.post(url, json=bad, headers=svc.admin())
        assert r.status_code == 422 and reason in r.json()["error"], (bad, r.text)
    r = svc.client.post(url, json=good, headers=svc.admin())
    assert r.status_code == 201
    board = svc.client.get("/v1/dashboard", headers=svc.admin()).json()
    assert [e["accuracy"] for e in board["jobs"][0]["evaluations"]] == [0.4]
    svc.close()

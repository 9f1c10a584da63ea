"""Random requests at every endpoint (methods, paths, bodies, content types, credentials good
and bad): the app never answers 5xx and never raises (a smoke test; issue 20 fuzzes fully)."""

from __future__ import annotations

import random
import time
from pathlib import Path

from fedtempo.service import auth
from tests.service.helpers import InProcess, tiny_spec


def test_random_requests_never_get_a_5xx(tmp_path: Path) -> None:
    svc = InProcess(tmp_path / "s")  # its TestClient re-raises any server exception
    job = svc.create(tiny_spec({"algorithm": "fedbuff", "concurrency": 2, "max_updates": 50}))
    cred = svc.enroll(job, "alice")
    rng = random.Random(0)
    base = f"/v1/jobs/{job}"
    paths = [
        base,
        f"{base}/work",
        f"{base}/updates/k1",
        f"{base}/model",
        f"{base}/spec",
        f"{base}/versions/0",
        f"{base}/versions/-1",
        f"{base}/versions/x",
        "/v1/jobs",
        f"{base}/parties",
        f"{base}/stop",
        "/v1/jobs/%00",
        "/v1/health",
        f"{base}/updates/" + "a" * 300,
    ]
    key = auth.b64(b"x" * 32)
    bodies = [
        b"",
        b"{}",
        b"null",
        b"[]",
        b'{"samples": -1}',
        b'{"samples": 1e309}',
        b'{"name": "x", "spec": null}',
        b'{"name": "", "public_key": "!!"}',
        b'{"name": "bob", "public_key": "' + key.encode() + b'"}',
        bytes(rng.randrange(256) for _ in range(100)),
        b'{"samples": 5, "wait_s": 0}',
        b'{"name": "x", "spec": {"model": {"name": "cnn-s"}, "input_shape": [4], '
        b'"num_classes": 3}}',
    ]
    statuses = set()
    for _ in range(600):
        method = rng.choice(["GET", "POST", "PUT", "DELETE"])
        path, body = rng.choice(paths), rng.choice(bodies)
        ctype = rng.choice(["application/json", "application/octet-stream", "text/plain", ""])
        headers = {"content-type": ctype} if ctype else {}
        mode = rng.random()
        if mode < 0.4:
            headers |= cred.headers(method, path, body, time.time())
        elif mode < 0.7:
            headers |= svc.admin()
        elif mode < 0.85:
            headers |= {
                auth.H_PARTY: "alice",
                auth.H_TIME: rng.choice(["nan", "inf", "1e400"]),
                auth.H_NONCE: "n",
                auth.H_SIG: "AAAA",
            }
        r = svc.client.request(method, path, content=body, headers=headers)
        assert r.status_code < 500, (method, path, body[:40], r.status_code, r.text)
        statuses.add(r.status_code)
    assert {200, 401, 404, 415, 422} <= statuses  # the requests really reached the handlers
    svc.close()

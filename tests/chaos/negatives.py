"""The security negatives of SERVICE.md (issue 20), at every route the app has: no credential,
a wrong admin key, a party's signature on an admin route, the admin key on a party route,
another job's credential, an unenrolled key, a tampered body under a valid signature, a
timestamp outside the window either way (a party's clock skewed), and a replayed request.
Each case is a request that would be accepted with the right credential; none may be."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from fastapi.routing import APIRoute

from fedtempo.service import auth, wire
from fedtempo.service.jobs import Envelope
from tests.service.helpers import InProcess, tiny_spec

SERVER = {
    "algorithm": "fedbuff",
    "concurrency": 4,
    "max_updates": 10**6,
    "fedbuff": {"buffer_size": 2},
}
PUBLIC = {"/v1/health", "/"}
SKEW_S = auth.WINDOW_S + 60.0


@dataclass
class Matrix:
    tried: int = 0
    accepted: list[str] = field(default_factory=list)  # "case at METHOD path (status)"
    routes: set[str] = field(default_factory=set)
    cases: set[str] = field(default_factory=set)
    controls_failed: list[str] = field(default_factory=list)  # the right caller was refused


class Scene:
    """Two jobs; alice enrolled in both (different keys); bob only in the second."""

    def __init__(self, svc: InProcess) -> None:
        self.svc = svc
        self.job = svc.create(tiny_spec(SERVER))
        self.other = svc.create(tiny_spec(SERVER))
        self.alice = svc.enroll(self.job, "alice")
        self.alice_b = svc.enroll(self.other, "alice")
        self.bob_b = svc.enroll(self.other, "bob")
        self.stranger = auth.Credential("", self.job, "alice", auth.private_bytes(auth.new_key()))
        self.layout = svc.service.jobs[self.job].bp.layout

    def body(self, method: str, path: str) -> tuple[bytes, str]:
        """A body the route would accept from the right caller."""
        if path.endswith("/updates/{key}"):
            task = self.task()
            meta = Envelope(task["task"], task["base_version"], 4, 1, 0.5).to_meta()
            return wire.encode(
                self.layout, torch.zeros(self.layout.numel), meta
            ), "application/octet-stream"
        data: dict[str, Any] | None = {
            "/v1/jobs": {"name": "x", "spec": tiny_spec(SERVER)},
            "/v1/jobs/{job_id}/parties": {
                "name": f"n{time.monotonic_ns()}",
                "public_key": auth.b64(b"k" * 32),
            },
            "/v1/jobs/{job_id}/work": {"samples": 4, "wait_s": 0},
            "/v1/jobs/{job_id}/evaluations": {"version": 0, "accuracy": 0.5, "samples": 10},
        }.get(path)
        return (b"", "") if data is None else (json.dumps(data).encode(), "application/json")

    def version(self) -> str:
        """The job's current version: older ones are dropped once no party holds them."""
        return str(self.svc.service.jobs[self.job].current_version())

    def task(self) -> dict[str, Any]:
        path = f"/v1/jobs/{self.job}/work"
        body = b'{"samples": 4, "wait_s": 0}'
        r = self.send(self.alice, "POST", path, body, "application/json")
        assert r.status_code == 200 and "task" in r.json(), r.text
        return dict(r.json())

    def send(
        self,
        cred: auth.Credential | None,
        method: str,
        path: str,
        body: bytes,
        ctype: str,
        now: float | None = None,
        admin: str | None = None,
        sign_body: bytes | None = None,
    ) -> Any:
        h: dict[str, str] = {"content-type": ctype} if ctype else {}
        if cred is not None:
            signed = body if sign_body is None else sign_body
            h |= cred.headers(method, path, signed, time.time() if now is None else now)
        if admin is not None:
            h["authorization"] = f"Bearer {admin}"
        return self.svc.client.request(method, path, content=body, headers=h)


def routes(svc: InProcess) -> list[tuple[str, str]]:
    out = []
    for r in svc.app.routes:
        if isinstance(r, APIRoute):
            out += [(m, r.path) for m in sorted(r.methods)]
    return out


def run_matrix(svc: InProcess, rounds: int = 1) -> Matrix:
    scene, m = Scene(svc), Matrix()
    for _ in range(rounds):
        for method, template in routes(svc):
            if template in PUBLIC:
                continue
            m.routes.add(f"{method} {template}")
            path = template.replace("{job_id}", scene.job).replace("{version}", scene.version())
            path = path.replace("{key}", f"k{time.monotonic_ns()}")
            body, ctype = scene.body(method, template)
            admin_route = not any(
                s in template for s in ("/work", "/updates/", "/spec", "/versions/", "/model")
            )
            now = time.time()
            cases: dict[str, dict[str, Any]] = {
                "no credential": {},
                "wrong admin key": {"admin": "not-the-admin-key"},
                "another job's credential": {"cred": scene.alice_b},
                "a party of another job only": {"cred": scene.bob_b},
                "an unenrolled key": {"cred": scene.stranger},
                "a tampered body under a valid signature": {
                    "cred": scene.alice,
                    "sign_body": body + b" ",
                },
                "a clock skewed ahead": {"cred": scene.alice, "now": now + SKEW_S},
                "a clock skewed behind": {"cred": scene.alice, "now": now - SKEW_S},
            }
            if admin_route:
                cases["a party's signature on an admin route"] = {"cred": scene.alice}
            elif "/model" not in template:
                cases["the admin key on a party route"] = {"admin": svc.token}
            for name, kw in cases.items():
                r = scene.send(kw.pop("cred", None), method, path, body, ctype, **kw)
                m.tried += 1
                m.cases.add(name)
                if r.status_code < 400 or r.status_code >= 500:
                    m.accepted.append(f"{name} at {method} {template} ({r.status_code})")
            if not admin_route:  # a replay of a request that was accepted once
                h = scene.alice.headers(method, path, body, time.time()) | (
                    {"content-type": ctype} if ctype else {}
                )
                first = svc.client.request(method, path, content=body, headers=h)
                again = svc.client.request(method, path, content=body, headers=h)
                m.tried += 1
                m.cases.add("a replayed request")
                if first.status_code >= 400:
                    m.accepted.append(
                        f"(the original of the replay at {method} {template} failed: {first.text})"
                    )
                if again.status_code < 400 or again.status_code >= 500:
                    m.accepted.append(
                        f"a replayed request at {method} {template} ({again.status_code})"
                    )
    controls(scene, m)
    return m


def controls(scene: Scene, m: Matrix) -> None:
    """The same requests from the right caller are accepted (so a refusal above was the
    credential's doing); the job is stopped last."""
    svc = scene.svc
    for method, template in sorted(routes(svc), key=lambda r: r[1].endswith("/stop")):
        if template in PUBLIC:
            continue
        path = template.replace("{job_id}", scene.job).replace("{version}", scene.version())
        path = path.replace("{key}", f"k{time.monotonic_ns()}")
        body, ctype = scene.body(method, template)
        if any(s in template for s in ("/work", "/updates/", "/spec", "/versions/", "/model")):
            r = scene.send(scene.alice, method, path, body, ctype)
        else:
            r = scene.send(None, method, path, body, ctype, admin=svc.token)
        if r.status_code >= 300:
            m.controls_failed.append(f"{method} {template}: {r.status_code} {r.text[:200]}")

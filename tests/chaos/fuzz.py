"""Malformed requests (issue 20), shared by ``test_fuzz.py`` and ``benchmarks/w_chaos.py``:
Hypothesis generators of broken safetensors payloads and envelopes, sent signed to a real
upload route of an in-process service, and the check that a refusal changed nothing."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from fedtempo.experiment.deploy import blueprint
from fedtempo.service import auth, wire
from fedtempo.service.jobs import Envelope
from tests.service.helpers import tiny_spec

SERVER = {
    "algorithm": "fedbuff",
    "concurrency": 2,
    "max_updates": 10**9,
    "fedbuff": {"buffer_size": 2},
}
OCTET = {"content-type": "application/octet-stream"}

# ---- generators -----------------------------------------------------------------------------

numbers = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " 1", "0x10", "1e309", "nan", "-0", "1_000", "٣", "None", "[]"]),
    st.text(max_size=20),
)


@st.composite
def envelopes(draw: Any, task: str) -> dict[str, str]:
    """Metadata where at least one field is missing or not what the server expects."""
    good = Envelope(task, 0, 4, 1, 0.5).to_meta()
    meta = dict(good)
    for name in draw(st.sets(st.sampled_from(sorted(good)), min_size=1)):
        if draw(st.booleans()):
            meta.pop(name)
        else:
            meta[name] = draw(numbers if name != "task" else st.text(max_size=30))
    extra = draw(st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3))
    return extra | meta


def _with_header(header: Any, data: bytes, size: int | None = None) -> bytes:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return struct.pack("<Q", len(raw) if size is None else size) + raw + data


@st.composite
def payloads(draw: Any, layout: wire.Layout, task: str) -> bytes:
    """A safetensors body broken one of the ways a client (or an attacker) can break it."""
    numel = layout.numel
    meta = Envelope(task, 0, 4, 1, 0.5).to_meta()
    good = wire.encode(layout, torch.zeros(numel), meta)
    (hsize,) = struct.unpack("<Q", good[:8])
    header = json.loads(good[8 : 8 + hsize])
    data = good[8 + hsize :]
    name = next(iter(layout.tensors))[0]
    kind = draw(
        st.sampled_from(
            [
                "truncated",
                "size-lies",
                "huge-header",
                "not-json",
                "json",
                "huge-shape",
                "dtype",
                "duplicate",
                "offsets",
                "metadata",
                "envelope",
                "random",
                "nonfinite",
            ]
        )
    )
    if kind == "truncated":
        return good[: draw(st.integers(0, len(good) - 1))]
    if kind == "size-lies":
        size = draw(st.integers(0, 2**64 - 1).filter(lambda s: s != hsize))
        return struct.pack("<Q", size) + good[8:]
    if kind == "huge-header":
        return _with_header(b"{" + b" " * draw(st.integers(100_001, 300_000)) + b"}", data)
    if kind == "not-json":
        return _with_header(draw(st.binary(max_size=200)), data)
    if kind == "json":
        value = draw(
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                lambda c: (
                    st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4)
                ),
                max_leaves=12,
            )
        )
        return _with_header(value, data)
    if kind == "huge-shape":
        h = json.loads(json.dumps(header))
        h[name]["shape"] = draw(st.lists(st.integers(0, 2**62), min_size=1, max_size=6))
        return _with_header(h, data)
    if kind == "dtype":
        h = json.loads(json.dumps(header))
        h[name]["dtype"] = draw(
            st.sampled_from(["F64", "F16", "BF16", "I64", "U8", "BOOL", "f32", ""])
            | st.text(max_size=5)
        )
        return _with_header(h, data)
    if kind == "duplicate":
        entry = json.dumps(header[name])
        raw = json.dumps(header).encode()
        dup = f'"{name}": {entry}, '.encode()
        return _with_header(b"{" + dup + raw[1:], data)
    if kind == "offsets":
        h = json.loads(json.dumps(header))
        a = draw(st.integers(-(2**40), 2**40))
        h[name]["data_offsets"] = draw(
            st.sampled_from([[a, a], [a, a + 4], [0, len(data) + 4], [a], "x"])
        )
        return _with_header(h, data)
    if kind == "metadata":
        h = json.loads(json.dumps(header))
        h["__metadata__"] = draw(st.sampled_from([None, [], "x", {"task": 1}, {"a": {"b": "c"}}]))
        return _with_header(h, data)
    if kind == "envelope":
        return wire.encode(layout, torch.zeros(numel), draw(envelopes(task)))
    if kind == "nonfinite":
        v = torch.zeros(numel)
        v[draw(st.integers(0, numel - 1))] = draw(
            st.sampled_from([float("nan"), float("inf"), -float("inf")])
        )
        return wire.encode(layout, v, meta)
    return draw(st.binary(max_size=2000))


# ---- the target ------------------------------------------------------------------------------

STATE_SQL = [
    "SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM updates",
    "SELECT version, accepted, status FROM jobs",
    "SELECT COUNT(*) FROM versions",
    "SELECT COUNT(*) FROM tasks",
    "SELECT COUNT(*) FROM parties",
]


@dataclass
class Tally:
    tried: int = 0
    accepted: int = 0
    server_errors: int = 0
    changed_on_refusal: int = 0
    slowest_s: float = 0.0
    hung: int = 0  # no answer within the client's timeout
    client_errors: int = 0  # the connection failed some other way (reset, refused)
    statuses: dict[int, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)  # the first few 5xx / changes, to fix

    def count(self, status: int, took: float) -> None:
        self.tried += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.slowest_s = max(self.slowest_s, took)
        if status >= 500:
            self.server_errors += 1
        elif status < 300:
            self.accepted += 1


class Target:
    """One FedBuff job and one enrolled party holding a task, on the service ``client`` talks to
    (an in-process ``TestClient`` or an ``httpx.Client`` to a real server) whose state directory
    is ``state``."""

    def __init__(self, client: httpx.Client, admin_token: str, state: Path) -> None:
        self.client, self.ledger = client, state / "ledger.sqlite"
        self.blobs = state / "blobs"
        admin = {"authorization": f"Bearer {admin_token}"}
        # its task must outlive a long run: an expiry would change the state under a refusal,
        # and every later upload would stop at the task check
        spec = {"name": "fuzz", "spec": tiny_spec(SERVER, task_timeout_s=1e7)}
        r = client.post("/v1/jobs", json=spec, headers=admin)
        assert r.status_code == 201, r.text
        self.job = str(r.json()["job"])
        key = auth.new_key()
        enroll = {"name": "fuzzer", "public_key": auth.b64(auth.public_key_bytes(key))}
        r = client.post(f"/v1/jobs/{self.job}/parties", json=enroll, headers=admin)
        assert r.status_code == 201, r.text
        self.cred = auth.Credential(
            str(client.base_url), self.job, "fuzzer", auth.private_bytes(key)
        )
        self.layout = blueprint(tiny_spec(SERVER)).layout
        self.task = self.new_task()

    def signed(self, method: str, path: str, body: bytes, ctype: str) -> httpx.Response:
        h = self.cred.headers(method, path, body, time.time()) | {"content-type": ctype}
        return self.client.request(method, path, content=body, headers=h)

    def new_task(self) -> str:
        path = f"/v1/jobs/{self.job}/work"
        r = self.signed("POST", path, b'{"samples": 4, "wait_s": 0}', "application/json")
        assert r.status_code == 200 and "task" in r.json(), r.text
        return str(r.json()["task"])

    def state(self) -> tuple[Any, ...]:
        """What a refused upload must not change (nonces and refusal counts may change)."""
        db = sqlite3.connect(f"file:{self.ledger}?mode=ro", uri=True)
        try:
            rows = tuple(tuple(db.execute(q).fetchone()) for q in STATE_SQL)
        finally:
            db.close()
        return (*rows, sum(len(os.listdir(d)) for d in self.blobs.iterdir() if d.name != "tmp"))

    def settled(self, quiet_s: float = 1.0, most_s: float = 15.0) -> None:
        """Wait until the state has not changed for ``quiet_s`` (the aggregation a valid upload
        set off is done), at most ``most_s``."""
        end, last = time.monotonic() + most_s, self.state()
        while time.monotonic() < end:
            time.sleep(quiet_s)
            now = self.state()
            if now == last:
                return
            last = now

    def upload(self, body: bytes, tally: Tally) -> int:
        """Send ``body`` as a signed upload; count it; a refusal must leave the state as it was."""
        before = self.state()
        path = f"/v1/jobs/{self.job}/updates/{secrets.token_hex(6)}"
        start = time.perf_counter()
        try:
            r = self.signed("PUT", path, body, "application/octet-stream")
        except httpx.HTTPError as exc:  # counted, not raised: Hypothesis would replay it
            if isinstance(exc, httpx.TimeoutException):
                tally.hung += 1
            else:
                tally.client_errors += 1
            if len(tally.examples) < 5:
                tally.examples.append(f"{type(exc).__name__} {exc} for {body[:120]!r}")
            return 0
        tally.count(r.status_code, time.perf_counter() - start)
        if r.status_code >= 500 and len(tally.examples) < 5:
            tally.examples.append(f"{r.status_code} {r.text[:200]} for {body[:120]!r}")
        if r.status_code < 300:
            self.task = self.new_task()  # it was valid after all: it used up the task
            self.settled()  # a fusion it triggers would otherwise change the state later
        elif self.state() != before:
            tally.changed_on_refusal += 1
            if len(tally.examples) < 5:
                tally.examples.append(f"state changed on {r.status_code} {r.text[:200]}")
        return int(r.status_code)


def generating(examples: int) -> Any:
    """Hypothesis settings for a fuzzing run: ``examples`` generated cases, no shrinking, no
    example database, no deadline (the server's time is measured, not limited, here)."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate],
    )


def fuzz_uploads(target: Target, n: int, tally: Tally, seed: int, batch: int = 25) -> Tally:
    """``n`` broken uploads (Hypothesis draws them ``batch`` at a time, from ``seed``)."""

    @generating(max(1, -(-n // batch)))
    @hypothesis_seed(seed)
    @given(st.data())
    def run(data: st.DataObject) -> None:
        bodies = [data.draw(payloads(target.layout, target.task)) for _ in range(batch)]
        for body in bodies[: max(0, n - tally.tried)]:  # the same draws whatever the tally
            if broke:
                return
            try:
                target.upload(body, tally)
            except Exception as exc:  # kept for after the run: Hypothesis would replay it
                broke.append(exc)

    broke: list[Exception] = []
    run()
    if broke:
        raise RuntimeError(f"the fuzzer broke after {tally.tried} uploads") from broke[0]
    return tally


def schemathesis_run(
    svc: Any, target: Target, per_operation: int, tally: Tally, seed: int
) -> Tally:
    """schemathesis over every operation of the app's OpenAPI schema: positive and negative
    cases, sent through the service's own test client (so that the app runs one lifespan),
    with or without the admin credential, at the real job or a generated id, unsigned or
    signed by the job's party (then a generated body meets the payload checks). Counts what
    comes back; a 5xx (or an exception out of the app) is a failure."""
    import schemathesis

    # from the document, not the app: schemathesis would run the app's lifespan a second time
    schema = schemathesis.openapi.from_dict(svc.client.get("/openapi.json").json())
    for result in schema.get_all_operations():
        _operation(result.ok(), svc, target, per_operation, tally, seed)
    return tally


def _operation(
    op: Any, svc: Any, target: Target, per_operation: int, tally: Tally, seed: int
) -> None:
    from schemathesis import GenerationMode

    where = f"{op.method.upper()} {op.path}"
    cases = st.one_of(
        op.as_strategy(generation_mode=GenerationMode.POSITIVE),
        op.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @generating(per_operation)
    @hypothesis_seed(seed)
    @given(cases, st.booleans(), st.booleans(), st.booleans())
    def run(case: Any, real_job: bool, as_admin: bool, sign: bool) -> None:
        if real_job and case.path_parameters and "job_id" in case.path_parameters:
            case.path_parameters["job_id"] = target.job
        kw = case.as_transport_kwargs(base_url="http://testserver")
        body = json.dumps(kw["json"]).encode() if "json" in kw else kw.get("data") or b""
        body = body.encode() if isinstance(body, str) else body
        if not isinstance(body, bytes):
            return  # (a form body: not something any route takes)
        headers = dict(kw.get("headers") or {})
        if as_admin:
            headers["authorization"] = f"Bearer {svc.token}"
        if sign:
            path = httpx.URL(kw["url"]).path
            headers |= target.cred.headers(kw["method"], path, body, time.time())
        try:
            request = svc.client.build_request(
                kw["method"], kw["url"], headers=headers, params=kw.get("params"), content=body
            )
        except (ValueError, TypeError, httpx.HTTPError):
            return  # not a request any HTTP client would send (a header it cannot encode)
        start = time.perf_counter()
        try:
            status = int(svc.client.send(request).status_code)
        except Exception as exc:  # the app raised: what a client sees as a 500
            status = 500
            if len(tally.examples) < 5:
                tally.examples.append(f"{where}: {type(exc).__name__} {exc}")
        tally.count(status, time.perf_counter() - start)
        if status >= 500 and len(tally.examples) < 5:
            tally.examples.append(f"{status} at {where}: {body[:200]!r}")

    run()


def schemathesis_stateful(root: Path, sequences: int, tally: Tally) -> Tally:
    """schemathesis's stateful phase: ``sequences`` chains of up to 10 calls linked by what it
    infers from the schema (create a job, then read, enrol, ask work of and stop it by the id that
    came back), with the admin credential and signed by an enrolled party. Each sequence runs on
    a fresh service in its own state directory under ``root`` (Hypothesis needs a call sequence to
    meet the same state each time it is run). Every answer is counted; a 5xx (or an exception out
    of the app) is a failure."""
    import schemathesis
    from schemathesis.core.transport import Response

    from tests.service.helpers import InProcess

    first = InProcess(root / "schema")
    # from the document, not the app: schemathesis would run the app's lifespan a second time
    schema = schemathesis.openapi.from_dict(first.client.get("/openapi.json").json())
    first.close()
    runs = iter(range(1 << 30))

    class Sequences(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            self.svc = InProcess(root / f"seq{next(runs)}")
            self.target = Target(self.svc.client, self.svc.token, self.svc.service.store.root)

        def teardown(self) -> None:
            self.svc.close()

        def before_call(self, case: Any) -> None:
            # a generated spec is almost never a valid job: half the creations (by the generated
            # name) send a real one, so that the chains after them reach a job that exists
            if case.method.upper() == "POST" and case.path == "/v1/jobs":
                name = case.body.get("name") if isinstance(case.body, dict) else None
                if isinstance(name, str) and zlib.crc32(name.encode()) % 2:
                    case.body = {"name": name[:64] or "seq", "spec": tiny_spec(SERVER)}

        def call(self, case: Any, **kwargs: Any) -> Any:
            kw = case.as_transport_kwargs(base_url="http://testserver")
            body = json.dumps(kw["json"]).encode() if "json" in kw else kw.get("data") or b""
            body = body.encode() if isinstance(body, str) else body
            headers = dict(kw.get("headers") or {}) | {"authorization": f"Bearer {self.svc.token}"}
            if isinstance(body, bytes):
                path = httpx.URL(kw["url"]).path
                headers |= self.target.cred.headers(kw["method"], path, body, time.time())
            start = time.perf_counter()
            nothing = httpx.Request(kw["method"], "http://testserver")
            try:
                r = self.svc.client.request(
                    kw["method"],
                    kw["url"],
                    headers=headers,
                    params=kw.get("params"),
                    content=body if isinstance(body, bytes) else None,
                )
            except (ValueError, TypeError, httpx.InvalidURL, httpx.LocalProtocolError):
                r = httpx.Response(400, request=nothing)  # not sendable by any client
            except Exception as exc:  # the app raised: what a client sees as a 500
                if len(tally.examples) < 5:
                    tally.examples.append(f"{case.method} {case.path}: {type(exc).__name__} {exc}")
                r = httpx.Response(500, request=nothing)
            tally.count(int(r.status_code), time.perf_counter() - start)
            if r.status_code >= 500 and len(tally.examples) < 5:
                tally.examples.append(f"{r.status_code} at {case.method} {case.path}")
            return Response.from_any(r)

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            return None  # counted in call(): conformance beyond "no 5xx" is not asked here

    Sequences.run(
        settings=settings(
            max_examples=sequences,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.generate],
            stateful_step_count=10,
        )
    )
    return tally

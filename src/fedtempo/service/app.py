"""The HTTP API (``/v1``), an ASGI app (FastAPI): many jobs, one durable store.

Control is JSON; tensors are ``application/octet-stream`` safetensors. Admin endpoints take
``Authorization: Bearer <admin credential>``; party endpoints take a signed request (see
``fedtempo.service.auth``). Before anything touches state a request passes, in order: the body
size limit, the content type, authentication (signature, time window, nonce), and the payload
checks (``wire.parse``, the job's own). Every refusal is a 4xx with ``{"error": reason}``; a
full or read-only disk is a 503 with the reason (retry later); nothing a client sends gives a
500. The OpenAPI schema is at ``/openapi.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from fedtempo.service import auth, wire
from fedtempo.service.accounting import Accounting
from fedtempo.service.aggregation import Aggregation, AggregationSettings
from fedtempo.service.asyncjob import AsyncJob
from fedtempo.service.jobs import Blueprint, Job, JobFactory, Rejected
from fedtempo.service.requests import (
    JSON_LIMIT,
    EnrollRequest,
    JobRequest,
    WorkRequest,
    read_body,
    read_json,
)
from fedtempo.service.rounds import RoundsJob
from fedtempo.service.store import Store, StoreError
from fedtempo.service.workers import Launcher, ProcessLauncher

log = logging.getLogger("fedtempo.service")
TICK_S = 0.2  # how often deadlines and leases are checked


def make_job(job_id: str, store: Store, blueprint: Blueprint) -> Job:
    kind = RoundsJob if blueprint.settings.kind == "rounds" else AsyncJob
    return kind(job_id, store, blueprint)


class Service:
    """The server's state: the store, the live jobs, the admin credential's hash, the
    aggregator workers."""

    def __init__(
        self,
        root: Path,
        factory: JobFactory,
        clock: Callable[[], float] = time.time,
        aggregation: AggregationSettings | None = None,
        launcher: Launcher | None = None,
    ):
        self.store, self.factory, self.clock = Store(root), factory, clock
        self.store.collect_garbage()
        self.new_admin_token: str | None = None
        if self.store.meta("admin_hash") is None:
            token = auth.new_admin_token()
            with self.store.tx() as db:
                db.execute("INSERT INTO meta VALUES ('admin_hash', ?)", (auth.token_hash(token),))
            self.new_admin_token = token
        self.jobs: dict[str, Job] = {}
        self.broken: dict[str, str] = {}  # jobs this fedtempo cannot load, with the reason
        for row in self.store.db.execute("SELECT id, spec FROM jobs").fetchall():
            try:
                bp = factory(json.loads(row["spec"]))
            except (ValueError, TypeError, KeyError) as exc:
                # one job that no longer builds (a changed model zoo, say) must not take the
                # other jobs down: it is refused with its reason, its state left untouched
                self.broken[row["id"]] = str(exc)
                log.warning("job %s cannot be loaded: %s", row["id"], exc)
                continue
            self.jobs[row["id"]] = make_job(row["id"], self.store, bp)
        self._changed: dict[str, asyncio.Event] = {}
        self._nonces: set[tuple[str, str]] = set()  # staged, not yet committed
        self.auth_failures = 0
        self.accounting = Accounting(self.store, clock)
        self.aggregation = Aggregation(
            aggregation or AggregationSettings(),
            launcher or ProcessLauncher(self.store.blobs),
            lambda: self.jobs,
            clock,
            self.changed,
            self.accounting,
        )

    def changed(self, job_id: str) -> None:
        event = self._changed.pop(job_id, None)
        if event is not None:
            event.set()
        self.aggregation.notify(job_id)

    def event(self, job_id: str) -> asyncio.Event:
        return self._changed.setdefault(job_id, asyncio.Event())

    def job(self, job_id: str) -> Job:
        if job_id in self.broken:
            raise Rejected(409, f"job {job_id} cannot be loaded: {self.broken[job_id]}")
        if job_id not in self.jobs:
            raise Rejected(404, f"no job {job_id!r}")
        return self.jobs[job_id]

    def create(self, name: str, spec: dict[str, Any]) -> str:
        try:
            bp = self.factory(spec)
        except (ValueError, TypeError, KeyError) as exc:
            message = str(exc)
            prefix = "" if message.startswith("job spec") else "job spec: "
            raise Rejected(422, prefix + message) from None
        slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()[:40] or "job"
        job_id = f"{slug}-{secrets.token_hex(3)}"
        sha = self.store.put_blob(wire.encode(bp.layout, bp.initial))
        with self.store.tx() as db:
            db.execute(
                "INSERT INTO jobs (id, name, spec, kind, status, created, version) "
                "VALUES (?,?,?,?, 'running', ?, 0)",
                (job_id, name, json.dumps(spec), bp.settings.kind, self.clock()),
            )
            db.execute("INSERT INTO versions VALUES (?, 0, ?)", (job_id, sha))
        self.jobs[job_id] = make_job(job_id, self.store, bp)
        return job_id

    def check_admin(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        stored = self.store.meta("admin_hash") or ""
        if not header.startswith("Bearer ") or not auth.token_matches(header[7:], stored):
            self.auth_failures += 1
            raise Rejected(401, "admin credential missing or wrong")

    def check_party(self, request: Request, job: Job, body: bytes, stage: bool = False) -> int:
        """The enrolled party that signed ``request`` (its id), or Rejected. Its nonce is
        recorded at once, or with ``stage`` in the request's own transaction (the caller then
        calls ``settle`` before its first await)."""
        h = request.headers
        name, ts, nonce, sig = (
            h.get(k, "") for k in (auth.H_PARTY, auth.H_TIME, auth.H_NONCE, auth.H_SIG)
        )
        if not (name and ts and nonce and sig):
            self.auth_failures += 1
            raise Rejected(401, "unsigned request: party signature headers missing")
        row = self.store.db.execute(
            "SELECT id, public_key FROM parties WHERE job=? AND name=?", (job.id, name)
        ).fetchone()
        try:
            signature, stamp = auth.unb64(sig), float(ts)
        except ValueError:
            signature, stamp = b"", float("nan")
        message = auth.signed_message(request.method, request.url.path, name, ts, nonce, body)
        if row is None or not auth.verify(bytes(row["public_key"]), signature, message):
            self.auth_failures += 1
            raise Rejected(401, f"signature does not verify for a party of job {job.id}")
        now = self.clock()
        if not abs(now - stamp) <= auth.WINDOW_S:
            self.auth_failures += 1
            raise Rejected(401, f"request timestamp outside the {auth.WINDOW_S:.0f} s window")
        key = f"{job.id}/{name}"
        seen = self.store.db.execute(
            "SELECT 1 FROM nonces WHERE party_key=? AND nonce=?", (key, nonce)
        ).fetchone()
        if seen is not None or (key, nonce) in self._nonces:
            self.auth_failures += 1
            raise Rejected(401, "replayed request: nonce already used")
        # recorded with the request's own transaction (or alone, by ``settle``)
        self._nonces.add((key, nonce))
        self.store.stage("INSERT INTO nonces VALUES (?,?,?)", (key, nonce, now))
        if not stage:
            self.settle()
        return int(row["id"])

    def settle(self) -> None:
        """Commit what a request staged (its nonce) if its own transaction did not."""
        try:
            self.store.flush()
        finally:
            self._nonces.clear()


def create_app(
    root: Path,
    factory: JobFactory,
    clock: Callable[[], float] = time.time,
    aggregation: AggregationSettings | None = None,
    launcher: Launcher | None = None,
) -> FastAPI:
    """The ASGI app over the state directory ``root`` (resumed if it holds jobs), its rounds
    aggregated by workers under ``aggregation`` (default: JIT, 2 worker processes)."""
    service = Service(root, factory, clock, aggregation, launcher)

    async def ticker() -> None:
        last_purge = 0.0
        while True:
            await asyncio.sleep(TICK_S)
            now = service.clock()
            if now - last_purge > 10.0:
                with service.store.tx() as db:
                    db.execute("DELETE FROM nonces WHERE ts < ?", (now - 2 * auth.WINDOW_S,))
                last_purge = now
            for job_id, job in list(service.jobs.items()):
                try:
                    before = (job.current_version(), job.status)
                    job.tick(now)
                    if (job.current_version(), job.status) != before or job.waiting:
                        service.changed(job_id)
                except (Rejected, StoreError, sqlite3.Error) as exc:
                    log.warning("job %s: tick failed: %s", job_id, exc)
            try:
                service.aggregation.step()
            except (StoreError, sqlite3.Error) as exc:
                log.warning("aggregation step failed: %s", exc)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(ticker())
        yield
        task.cancel()
        await service.aggregation.shutdown()
        service.store.close()

    app = FastAPI(title="fedtempo", version="1", lifespan=lifespan)
    app.state.service = service

    @app.exception_handler(Rejected)
    async def rejected(request: Request, exc: Rejected) -> JSONResponse:
        return JSONResponse({"error": exc.reason}, status_code=exc.status)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=503, headers={"retry-after": "5"})

    @app.exception_handler(sqlite3.OperationalError)
    async def db_error(request: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        reason = f"the state store refused the write ({exc}); nothing was changed"
        return JSONResponse({"error": reason}, status_code=503, headers={"retry-after": "5"})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg')}"}, status_code=422)

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        return {"ok": True, "jobs": len(service.jobs)}

    # ---- admin --------------------------------------------------------------------------

    @app.post("/v1/jobs", status_code=201)
    async def create_job(request: Request) -> dict[str, Any]:
        service.check_admin(request)
        req = await read_json(request, JobRequest)
        job_id = service.create(req.name, req.spec)
        return {"job": job_id}

    @app.get("/v1/jobs")
    async def list_jobs(request: Request) -> dict[str, Any]:
        service.check_admin(request)
        now = service.clock()
        return {"jobs": [j.describe(now) for j in service.jobs.values()]}

    @app.get("/v1/jobs/{job_id}")
    async def job_status(job_id: str, request: Request) -> dict[str, Any]:
        service.check_admin(request)
        return service.job(job_id).describe(service.clock())

    @app.post("/v1/jobs/{job_id}/stop")
    async def stop_job(job_id: str, request: Request) -> dict[str, Any]:
        service.check_admin(request)
        job = service.job(job_id)
        if job.status == "running":
            with service.store.tx() as db:
                db.execute(
                    "UPDATE jobs SET status='stopped', done_reason='stopped by the admin', "
                    "finished=? WHERE id=?",
                    (service.clock(), job_id),
                )
        service.changed(job_id)
        return job.describe(service.clock())

    @app.post("/v1/jobs/{job_id}/parties", status_code=201)
    async def enroll(job_id: str, request: Request) -> dict[str, Any]:
        service.check_admin(request)
        job = service.job(job_id)
        req = await read_json(request, EnrollRequest)
        try:
            key = auth.unb64(req.public_key)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise Rejected(422, "public_key: not a raw Ed25519 public key (32 bytes, base64)")
        db = service.store.db
        if db.execute(
            "SELECT 1 FROM parties WHERE job=? AND name=?", (job_id, req.name)
        ).fetchone():
            raise Rejected(409, f"party {req.name!r} is already enrolled in job {job_id}")
        with service.store.tx():
            pid = db.execute("SELECT COUNT(*) FROM parties WHERE job=?", (job_id,)).fetchone()[0]
            db.execute(
                "INSERT INTO parties (job, name, id, public_key) VALUES (?,?,?,?)",
                (job_id, req.name, pid, key),
            )
        return {"job": job.id, "party": req.name, "id": int(pid)}

    # ---- parties (and the admin, for the model) -------------------------------------------

    @app.get("/v1/jobs/{job_id}/model")
    async def model(job_id: str, request: Request) -> Response:
        job = service.job(job_id)
        if request.headers.get("authorization"):
            service.check_admin(request)
        else:
            service.check_party(request, job, b"")
        blob = job.version_blob(job.current_version())
        return Response(
            blob,
            media_type="application/octet-stream",
            headers={"x-fedtempo-version": str(job.current_version())},
        )

    @app.get("/v1/jobs/{job_id}/spec")
    async def spec(job_id: str, request: Request) -> dict[str, Any]:
        job = service.job(job_id)
        party = service.check_party(request, job, b"")
        row = job.row()
        return {
            "job": job.id,
            "party_id": party,
            "spec": json.loads(row["spec"]),
            "layout": job.bp.layout.to_json(),
        }

    @app.post("/v1/jobs/{job_id}/work")
    async def work(job_id: str, request: Request) -> JSONResponse:
        job = service.job(job_id)
        body = await read_body(request, JSON_LIMIT, "application/json")
        party = service.check_party(request, job, body, stage=True)
        try:
            try:
                req = WorkRequest.model_validate_json(body)
            except ValueError as exc:
                raise Rejected(422, f"work request: {exc}") from None
            job.set_samples(party, req.samples)
            deadline = service.clock() + req.wait_s
            while True:
                event = service.event(job_id)
                before = job.current_version()
                task = job.work(party, service.clock())  # a task's commit takes the nonce along
                service.settle()  # before the first await
                if job.current_version() != before or task is not None:
                    service.changed(job_id)
                if task is not None:
                    return JSONResponse(task)  # hot paths answer directly (no re-encoding)
                left = deadline - service.clock()
                if left <= 0:
                    return JSONResponse({"wait": True})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout=min(left, 1.0))
        finally:
            service.settle()

    @app.get("/v1/jobs/{job_id}/versions/{version}")
    async def version(job_id: str, version: int, request: Request) -> Response:
        job = service.job(job_id)
        service.check_party(request, job, b"")
        return Response(job.version_blob(version), media_type="application/octet-stream")

    @app.put("/v1/jobs/{job_id}/updates/{key}")
    async def upload(job_id: str, key: str, request: Request) -> JSONResponse:
        job = service.job(job_id)
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", key):
            raise Rejected(422, "update key: 1-100 characters of A-Z a-z 0-9 _ . -")
        body = await read_body(request, job.bp.layout.max_bytes, "application/octet-stream")
        party = service.check_party(request, job, body, stage=True)
        try:
            answer = job.upload(party, key, body, service.clock())
        except Rejected as exc:
            if exc.status != 404:
                job.count_rejection(exc.code)
            raise
        finally:
            service.settle()
        if answer.get("duplicate") and "next" in answer:  # the stored one may be stale
            answer["next"] = job.work(party, service.clock())
        service.changed(job_id)
        return JSONResponse(answer)

    return app

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
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi import Path as FastPath
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from fedtempo.service import auth
from fedtempo.service.aggregation import AggregationSettings
from fedtempo.service.asyncjob import AsyncJob, Pending
from fedtempo.service.core import Service
from fedtempo.service.jobs import MAX_COUNT, JobFactory, Rejected
from fedtempo.service.requests import (
    JSON_LIMIT,
    SIGNED,
    UPDATE_BODY,
    EnrollRequest,
    EvaluationRequest,
    JobRequest,
    WorkRequest,
    json_body,
    read_body,
    read_json,
)
from fedtempo.service.store import StoreError
from fedtempo.service.views import add_views, describe
from fedtempo.service.workers import Launcher

log = logging.getLogger("fedtempo.service")
TICK_S = 0.2  # how often deadlines and leases are checked


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
        while True:
            await asyncio.sleep(TICK_S)
            service.tick_all()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(ticker())
        warm = getattr(service.aggregation.launcher, "warm", None)
        warming = asyncio.create_task(warm()) if warm is not None else None
        yield
        if warming is not None:
            warming.cancel()
        task.cancel()
        await service.aggregation.shutdown()
        service.store.close()

    app = FastAPI(title="fedtempo", version="1", lifespan=lifespan)
    app.state.service = service
    add_views(app, service)

    @app.exception_handler(Rejected)
    async def rejected(request: Request, exc: Rejected) -> JSONResponse:
        retry = {"retry-after": "1"} if exc.status == 503 else None
        return JSONResponse({"error": exc.reason}, status_code=exc.status, headers=retry)

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

    @app.post("/v1/jobs", status_code=201, openapi_extra=json_body(JobRequest))
    async def create_job(request: Request) -> dict[str, Any]:
        service.check_admin(request)
        req = await read_json(request, JobRequest)
        job_id = service.create(req.name, req.spec)
        return {"job": job_id}

    @app.get("/v1/jobs")
    async def list_jobs(request: Request) -> dict[str, Any]:
        service.check_admin(request)
        now = service.clock()
        return {"jobs": [describe(service, j, now) for j in service.jobs.values()]}

    @app.get("/v1/jobs/{job_id}")
    async def job_status(job_id: str, request: Request) -> dict[str, Any]:
        service.check_admin(request)
        return describe(service, service.job(job_id), service.clock())

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

    @app.post(
        "/v1/jobs/{job_id}/evaluations", status_code=201, openapi_extra=json_body(EvaluationRequest)
    )
    async def evaluation(job_id: str, request: Request) -> dict[str, Any]:
        """An evaluator (``fedtempo emulate``, or the operator's own) reports a version's
        accuracy on held-out data: the dashboard's accuracy over time."""
        service.check_admin(request)
        job = service.job(job_id)
        req = await read_json(request, EvaluationRequest)
        if req.version > job.current_version():
            raise Rejected(422, f"version {req.version} is not published yet")
        with service.store.tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO evaluations VALUES (?,?,?,?,?,?)",
                (job_id, req.version, service.clock(), req.accuracy, req.loss, req.samples),
            )
        return {"job": job_id, "version": req.version}

    @app.post("/v1/jobs/{job_id}/parties", status_code=201, openapi_extra=json_body(EnrollRequest))
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

    @app.get("/v1/jobs/{job_id}/spec", openapi_extra={"parameters": SIGNED})
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

    @app.post("/v1/jobs/{job_id}/work", openapi_extra=json_body(WorkRequest, signed=True))
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
                wake = service.waiter(job_id, party)  # before the look: no wake-up missed
                try:
                    before = job.current_version()
                    task = job.work(party, service.clock())  # its commit takes the nonce along
                    service.settle()  # before the first await
                    if job.current_version() != before or task is not None:
                        service.changed(job_id)
                    if task is not None:
                        return JSONResponse(task)  # hot paths answer directly (no re-encoding)
                    left = deadline - service.clock()
                    if left <= 0:
                        return JSONResponse({"wait": True})
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake, timeout=min(left, 1.0))
                finally:
                    service.unwait(job_id, party, wake)
        finally:
            service.settle()

    @app.get("/v1/jobs/{job_id}/versions/{version}", openapi_extra={"parameters": SIGNED})
    async def version(
        job_id: str, request: Request, version: int = FastPath(ge=0, le=MAX_COUNT)
    ) -> Response:
        job = service.job(job_id)
        service.check_party(request, job, b"")
        return Response(job.version_blob(version), media_type="application/octet-stream")

    @app.put("/v1/jobs/{job_id}/updates/{key}", openapi_extra=UPDATE_BODY)
    async def upload(job_id: str, key: str, request: Request) -> JSONResponse:
        job = service.job(job_id)
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", key):
            raise Rejected(422, "update key: 1-100 characters of A-Z a-z 0-9 _ . -")
        body = await read_body(request, job.bp.layout.max_bytes, "application/octet-stream")
        party = service.check_party(request, job, body, stage=True)
        try:
            if isinstance(job, AsyncJob):  # a worker applies it: the answer comes from there
                loop = asyncio.get_running_loop()
                prepared = job.prepare(party, key, body, service.clock(), loop)
            else:
                prepared = job.upload(party, key, body, service.clock())
        except Rejected as exc:
            if exc.status != 404:
                job.count_rejection(exc.code)
            raise
        finally:
            service.settle()
        if isinstance(prepared, Pending):
            assert isinstance(job, AsyncJob)
            try:
                answer = await service.aggregation.submit(job, prepared)
            except Rejected as exc:
                if exc.status < 500:  # the job ended, or the task went, while it waited
                    job.count_rejection(exc.code)
                raise
        else:
            answer = prepared
        if answer.get("duplicate") and "next" in answer:  # the stored one may be stale
            answer["next"] = job.work(party, service.clock())
        service.changed(job_id)
        return JSONResponse(answer)

    return app

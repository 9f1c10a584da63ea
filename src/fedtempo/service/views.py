"""What an operator looks at: the aggregation figures of ``fedtempo job status``, a Prometheus
metrics endpoint (``/metrics``, text exposition format) and the live dashboard (``/``).

All three read the same numbers (``Accounting`` and the jobs' own status). The dashboard is a
static page that fetches ``/v1/dashboard`` every second with the admin credential it reads from
the page address's fragment (``/#token=...``: a fragment never reaches the server or its logs),
so that nothing reloads and the credential is never in a URL the server sees.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from fedtempo.service.jobs import POLL_FRESH_S, Job

if TYPE_CHECKING:
    from fedtempo.service.core import Service

PAGE = Path(__file__).with_name("dashboard.html")
POOL_HISTORY = 500  # worker lives the dashboard shows (the most recent)


def describe(service: Service, job: Job, now: float) -> dict[str, Any]:
    """A job's status with its aggregation figures."""
    out = job.describe(now)
    out["aggregation"] = service.accounting.job(job.id)
    return out


def evaluations(job: Job, last: int = POOL_HISTORY) -> list[dict[str, Any]]:
    """What evaluators reported of the job's ``last`` versions, in version order."""
    rows = job.store.db.execute(
        "SELECT version, at, accuracy, loss FROM evaluations WHERE job=? "
        "ORDER BY version DESC LIMIT ?",
        (job.id, last),
    ).fetchall()
    return [
        {"version": int(r[0]), "at": float(r[1]), "accuracy": float(r[2]), "loss": r[3]}
        for r in reversed(rows)
    ]


def parties(job: Job, now: float) -> list[dict[str, Any]]:
    """Each enrolled party: online, and the staleness of its last update (versions behind)."""
    db, version = job.store.db, job.current_version()
    rows = db.execute("SELECT id, name FROM parties WHERE job=? ORDER BY id", (job.id,))
    out = []
    for r in rows.fetchall():
        # one index probe per party (updates (job, party, base_version)): the view costs the
        # same on a job of a million updates as on a new one
        (base,) = db.execute(
            "SELECT MAX(base_version) FROM updates WHERE job=? AND party=?", (job.id, r["id"])
        ).fetchone()
        out.append(
            {
                "name": str(r["name"]),
                "online": now - job.seen.get(int(r["id"]), -1e18) <= POLL_FRESH_S,
                "staleness": None if base is None else version - int(base),
            }
        )
    return out


def dashboard(service: Service) -> dict[str, Any]:
    now = service.clock()
    agg = service.aggregation
    jobs = []
    for job in service.jobs.values():
        info = describe(service, job, now)
        info["party_list"] = parties(job, now)
        info["evaluations"] = evaluations(job)
        jobs.append(info)
    return {
        "now": now,
        "policy": agg.s.policy,
        "capacity": agg.s.workers,
        "launcher": agg.launcher.name,
        "deploy_s": agg.deploy_s,
        "fuse_s": agg.fuse_s,
        "totals": service.accounting.totals(list(service.jobs)),
        "jobs": jobs,
        "pool": service.accounting.workers()[-POOL_HISTORY:],
    }


class _Collector:
    """The service's figures as Prometheus metric families, read at each scrape."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> list[Metric]:
        s, now = self.service, self.service.clock()
        c_s = CounterMetricFamily(
            "fedtempo_worker_container_seconds", "Aggregator worker wall time", labels=["job"]
        )
        cpu = CounterMetricFamily(
            "fedtempo_worker_cpu_seconds", "Aggregator worker CPU time", labels=["job"]
        )
        deploys = CounterMetricFamily("fedtempo_worker_deploys", "Workers started", labels=["job"])
        live = GaugeMetricFamily("fedtempo_workers_live", "Workers running now", labels=["job"])
        eager = CounterMetricFamily(
            "fedtempo_eager_equivalent_seconds",
            "Container-seconds one eager worker per job would have used",
            labels=["job"],
        )
        latency = GaugeMetricFamily(
            "fedtempo_aggregation_latency_seconds",
            "Median publish minus the arrival that closed the round",
            labels=["job"],
        )
        version = GaugeMetricFamily("fedtempo_job_version", "Current model version", labels=["job"])
        accuracy = GaugeMetricFamily(
            "fedtempo_job_accuracy", "Latest evaluated accuracy", labels=["job"]
        )
        updates = CounterMetricFamily(
            "fedtempo_updates", "Updates by outcome", labels=["job", "outcome"]
        )
        for job_id, job in s.jobs.items():
            info = job.describe(now)
            version.add_metric([job_id], info["version"])
            updates.add_metric([job_id, "accepted"], info["updates"]["accepted"])
            for reason, count in info["updates"]["rejected"].items():
                updates.add_metric([job_id, f"rejected: {reason}"], count)
            evaluated = evaluations(job, last=1)
            if evaluated:
                accuracy.add_metric([job_id], evaluated[-1]["accuracy"])
            a = s.accounting.job(job_id)
            c_s.add_metric([job_id], a["container_s"])
            cpu.add_metric([job_id], a["cpu_s"])
            deploys.add_metric([job_id], a["deploys"])
            live.add_metric([job_id], a["live_workers"])
            eager.add_metric([job_id], a["eager_equivalent_s"])
            if a["latency_s_median"] is not None:
                latency.add_metric([job_id], a["latency_s_median"])
        pool = GaugeMetricFamily("fedtempo_worker_pool_capacity", "Most workers at once")
        pool.add_metric([], s.aggregation.s.workers)
        deploy = GaugeMetricFamily("fedtempo_worker_deploy_seconds", "Measured deploy time")
        deploy.add_metric([], s.aggregation.deploy_s)
        return [c_s, cpu, deploys, live, eager, latency, version, accuracy, updates, pool, deploy]


def add_views(app: FastAPI, service: Service) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(service))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/v1/dashboard")
    async def dashboard_data(request: Request) -> JSONResponse:
        service.check_admin(request)
        return JSONResponse(dashboard(service))

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        service.check_admin(request)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

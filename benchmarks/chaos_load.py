"""W-chaos's load part: hundreds of asyncio parties on loopback long-polling and uploading to
one real server for minutes; upload latency, errors, and the server's memory and file
descriptors over time (from /proc)."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from tests.chaos.harness import enrolled
from tests.service.helpers import tiny_spec
from tests.service.live import Server

from fedtempo.experiment.deploy import blueprint
from fedtempo.service import auth, wire
from fedtempo.service.client import Admin
from fedtempo.service.jobs import Envelope


def _proc(pid: int) -> tuple[float, int]:
    """(resident MB, open file descriptors) of process ``pid``."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024.0
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


async def _party(
    client: httpx.AsyncClient,
    cred: auth.Credential,
    layout: wire.Layout,
    end: float,
    rng: np.random.Generator,
    out: dict[str, Any],
) -> None:
    base = f"/v1/jobs/{cred.job}"
    task: dict[str, Any] | None = None
    while time.monotonic() < end:
        try:
            if task is None:
                path, body = base + "/work", json.dumps({"samples": 4, "wait_s": 10}).encode()
                h = cred.headers("POST", path, body, time.time())
                r = await client.post(
                    path, content=body, headers=h | {"content-type": "application/json"}
                )
                out["asks"] += 1
                if r.status_code != 200:
                    out["errors"][str(r.status_code)] = out["errors"].get(str(r.status_code), 0) + 1
                    await asyncio.sleep(1.0)
                    continue
                data = r.json()
                task = data if "task" in data else None
                continue
            await asyncio.sleep(float(rng.uniform(0.5, 2.0)))  # "training"
            meta = Envelope(task["task"], task["base_version"], 4, 1, 0.3).to_meta()
            body = wire.encode(layout, torch.randn(layout.numel) * 0.01, meta)
            path = f"{base}/updates/{task['task']}"
            h = cred.headers("PUT", path, body, time.time())
            start = time.perf_counter()
            r = await client.put(
                path, content=body, headers=h | {"content-type": "application/octet-stream"}
            )
            took = time.perf_counter() - start
            if r.status_code == 200:
                out["latency"].append(took)
                out["when"].append(time.monotonic())
                nxt = r.json().get("next")
                task = nxt if nxt and "task" in nxt else None
            else:
                out["errors"][str(r.status_code)] = out["errors"].get(str(r.status_code), 0) + 1
                task = None
        except httpx.HTTPError as exc:
            out["errors"][type(exc).__name__] = out["errors"].get(type(exc).__name__, 0) + 1
            task = None
            await asyncio.sleep(0.5)


async def _sample(
    pid: int, end: float, every_s: float, out: list[tuple[float, float, int]]
) -> None:
    t0 = time.monotonic()
    while time.monotonic() < end:
        rss, fds = _proc(pid)
        out.append((time.monotonic() - t0, rss, fds))
        await asyncio.sleep(every_s)


async def _drive(
    srv: Server, creds: list[auth.Credential], layout: wire.Layout, seconds: float
) -> dict[str, Any]:
    out: dict[str, Any] = {"latency": [], "when": [], "errors": {}, "asks": 0}
    samples: list[tuple[float, float, int]] = []
    out["began"] = time.monotonic()
    end = out["began"] + seconds
    assert srv.proc is not None
    # a client (one connection pool) per party, as on real devices: a shared pool of hundreds
    # of connections costs httpcore a scan of all of them per request
    clients = [httpx.AsyncClient(base_url=srv.url, timeout=60.0) for _ in creds]
    try:
        tasks = [
            _party(clients[i], c, layout, end, np.random.default_rng(i), out)
            for i, c in enumerate(creds)
        ]
        await asyncio.gather(_sample(srv.proc.pid, end, max(1.0, seconds / 60), samples), *tasks)
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    out["samples"] = samples
    return out


def load_run(root: Path, parties: int, seconds: float, concurrency: int) -> dict[str, Any]:
    srv = Server(root / "state")
    srv.start()
    try:
        admin = Admin(srv.url, srv.token)
        server = {
            "algorithm": "fedbuff",
            "concurrency": concurrency,
            "max_updates": 10**9,
            "fedbuff": {"buffer_size": 10},
        }
        spec = tiny_spec(server)
        job = admin.create_job("load", spec)
        creds = enrolled(admin, job, parties, srv.url)
        layout = blueprint(spec).layout
        out = asyncio.run(_drive(srv, creds, layout, seconds))
        out["accepted"] = admin.status(job)["updates"]["accepted"]
    finally:
        srv.kill()
    took, when = np.array(out.pop("latency")), np.array(out.pop("when")) - out.pop("began")
    windows = []  # (window start s, uploads, p50 ms, p99 ms): is latency flat over time?
    step = max(10.0, seconds / 10)
    for t0 in np.arange(0.0, seconds, step):
        w = np.sort(took[(when >= t0) & (when < t0 + step)])
        if len(w):
            windows.append(
                (
                    float(t0),
                    len(w),
                    1000 * float(w[len(w) // 2]),
                    1000 * float(w[min(len(w) - 1, int(0.99 * len(w)))]),
                )
            )
    lat = sorted(took.tolist())
    samples = out.pop("samples")
    third = max(1, len(samples) // 3)
    warm = statistics.median(r for _, r, _ in samples[third : 2 * third] or samples)
    late = statistics.median(r for _, r, _ in samples[-third:])
    return {
        "parties": parties,
        "seconds": seconds,
        "uploads": len(lat),
        "uploads_per_s": len(lat) / seconds,
        "upload_p50_ms": 1000 * lat[len(lat) // 2] if lat else float("nan"),
        "upload_p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        if lat
        else float("nan"),
        "errors": sum(out["errors"].values()),
        "error_kinds": out["errors"],
        "asks": out["asks"],
        "accepted_by_server": out["accepted"],
        "rss_mb_first": samples[0][1],
        "rss_mb_middle": warm,
        "rss_mb_last": late,
        "rss_growth_pct": 100.0 * (late - warm) / warm,
        "fds_max": max(f for _, _, f in samples),
        "fds_last": samples[-1][2],
        "latency_windows": windows,
        "rss_series": [(round(t, 1), round(r, 1), f) for t, r, f in samples],
    }

"""W-jit-live (BENCHMARKS.md): JIT aggregation in the process table.

One real `fedtempo serve` process per run, its rounds fused by aggregator worker processes it
starts and stops itself (`--aggregation eager|lazy|jit --workers C`). 20 FedAvg jobs x 30
parties, 10 rounds, a round closing at its quorum of 20 (`[job] close = "quorum"`); the parties'
round durations are W-jit's (FLHetBench phone compute, FCC links, 30% intermittent with FLASH
windows), played on the wall clock at 1/SCALE speed by lean asyncio parties on this machine that
skip training and upload a precomputed delta of the job's model size, signed and durable as any
update. As in the simulator's model, a straggler drops its work when its round closes and joins
the next one: a watcher per job polls the job's status (admin, twice a second) and wakes the
job's parties when the round changes, standing in for a server that tells stragglers to stop.

Models: ~100 KB (logreg on MNIST, 7,850 parameters) for the full setting; ~10 MB (the zoo's mlp
on 112 x 112 inputs, 2.55 M parameters) in a smaller setting (4 jobs x 10 parties, quorum 7, 5
rounds), since 20 x 20 uploads of 10 MB per round would measure this machine's disk rather than
aggregation.

Figures, read from the service's own ledger after each run: worker container-seconds (spawn to
exit) and CPU-seconds (the worker processes' own, from the OS), deploys, the measured deploy time,
aggregation latency (publish minus the arrival that closed the round) median and p95, the median
round; JIT's saving against eager and its added latency as a share of eager's median round; and
the simulator's prediction (`fedtempo.sim.jit` on the same arrivals, with the deploy and fusion
times this service measured) of the same saving.

    python benchmarks/w_jit_live.py [--quick] [--seed 0] [--large] [--only 10MB]

Results: benchmarks/results/w_jit_live.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import simpy
import torch
from common import report
from w_jit import Parties, make_jobs, population
from w_live import Conn, Server

from fedtempo.experiment.deploy import blueprint
from fedtempo.service import auth, wire
from fedtempo.service.client import Admin
from fedtempo.service.jobs import Envelope
from fedtempo.sim.jit import AggregationService, JitSettings


@dataclass(frozen=True)
class Setting:
    name: str
    model: dict[str, Any]
    input_shape: tuple[int, ...]
    nbytes: float  # what the arrival model transfers per session
    jobs: int
    per_job: int
    quorum: int
    rounds: int
    pools: tuple[int, ...]
    scale: float  # virtual seconds per wall second


def settings(quick: bool, large: bool) -> list[Setting]:
    small, big = ({"name": "logreg"}, (1, 28, 28)), ({"name": "mlp"}, (1, 112, 112))
    if quick:
        return [Setting("100KB", *small, 31_400, 2, 5, 3, 2, (2,), 10.0)]
    out = [Setting("100KB", *small, 31_400, 20, 30, 20, 10, (20, 5), 4.0)]
    if large:  # 10 MB transfers: a quorum of 7 of 10 lands ~330 virtual s in (W-jit's links),
        # so this one plays at 16x (and its rounds' deadline is longer, see ``run``)
        out.append(Setting("10MB", *big, 10_200_000, 4, 10, 7, 5, (4,), 16.0))
    return out


def spec(s: Setting, deadline_s: float) -> dict[str, Any]:
    return {
        "name": "w-jit-live",
        "seed": 0,
        "model": s.model,
        "server": {"algorithm": "fedavg", "rounds": s.rounds, "clients_per_round": s.per_job},
        "job": {"quorum": s.quorum, "close": "quorum", "gather_s": 2.0, "deadline_s": deadline_s},
        "input_shape": list(s.input_shape),
        "num_classes": 10,
    }


class Rounds:
    """Per job, an event set each time its open round changes (closes or a new one opens)."""

    def __init__(self) -> None:
        self.events: dict[str, asyncio.Event] = {}

    def event(self, job: str) -> asyncio.Event:
        return self.events.setdefault(job, asyncio.Event())

    async def watch(self, admin: Admin, jobs: list[str], stop: asyncio.Event) -> None:
        last: dict[str, Any] = {}
        while not stop.is_set():
            for job in jobs:
                st = await asyncio.to_thread(admin.status, job)
                r = st.get("round")
                key = (st["version"], r and r["number"], r and r["closing"])
                if last.get(job) != key:
                    last[job] = key
                    self.events.pop(job, asyncio.Event()).set()
            await asyncio.sleep(0.5)


async def party(
    url: str,
    cred: auth.Credential,
    layout: wire.Layout,
    delta: torch.Tensor,
    arrival: Any,
    t0: float,
    scale: float,
    rounds: Rounds,
    stop: asyncio.Event,
) -> None:
    """Ask for work; per task, wait the round's (scaled) duration from the W-jit arrival model,
    then upload; a straggler whose round closes first drops it and asks again."""
    host, port = url.removeprefix("http://").split(":")
    conn: Conn | None = None

    async def send(method: str, path: str, body: bytes, ctype: str) -> Any:
        """One signed request; a connection the server closed while idle is opened again."""
        nonlocal conn
        for _ in range(3):
            if conn is None:
                conn = Conn(*await asyncio.open_connection(host, int(port)))
            h = cred.headers(method, path, body, time.time())
            try:
                return await conn.request(method, path, body, {**h, "content-type": ctype})
            except (OSError, IndexError, asyncio.IncompleteReadError):
                conn.writer.close()
                conn = None
        raise ConnectionError(f"{cred.party}: the server does not answer")

    base = f"/v1/jobs/{cred.job}"
    while not stop.is_set():
        body = json.dumps({"samples": 10, "wait_s": 5.0}).encode()
        _, task = await send("POST", base + "/work", body, "application/json")
        if task.get("done"):
            break
        if "task" not in task:
            continue
        changed = rounds.event(cred.job)
        now_v = (time.time() - t0) * scale
        lands = arrival(int(task["round"]), now_v)
        wait = (lands - now_v) / scale if math.isfinite(lands) else 3600.0
        try:
            await asyncio.wait_for(changed.wait(), timeout=max(0.0, wait))
            if changed.is_set() and not math.isfinite(lands):
                continue  # the round moved on without this party
            if changed.is_set():
                continue  # closed before this straggler finished: its work is dropped
        except TimeoutError:
            pass
        env = Envelope(task["task"], task["base_version"], 10, 1, 0.1)
        payload = wire.encode(layout, delta, env.to_meta())
        await send("PUT", f"{base}/updates/{task['task']}", payload, "application/octet-stream")
    if conn is not None:
        conn.writer.close()


def ledger(state: Path, names: dict[str, int]) -> dict[str, Any]:
    """The run's figures from the service's own ledger (read after the server stopped), over
    the jobs that completed every round (a job whose parties cannot make its quorum is stopped,
    as the simulator's such jobs never complete); ``names``: job id -> job index."""
    db = sqlite3.connect(state / "ledger.sqlite")
    db.row_factory = sqlite3.Row
    done = {r["id"] for r in db.execute("SELECT id FROM jobs WHERE status='done'")}
    workers = [w for w in db.execute("SELECT * FROM workers") if w["job"] in done]
    rounds = [
        r
        for r in db.execute("SELECT * FROM rounds WHERE published IS NOT NULL")
        if r["job"] in done
    ]
    jobs = [j for j in db.execute("SELECT * FROM jobs") if j["id"] in done]
    db.close()
    if not jobs:
        raise SystemExit(f"{state.name}: no job completed (their parties never made the quorum)")
    finished = {j["id"]: j["finished"] for j in jobs}
    workers = [  # a worker still up when the server stopped: counted to its job's end
        {**dict(w), "exited": w["exited"] or max(finished[w["job"]], w["ready"])} for w in workers
    ]
    latency = [r["published"] - r["closing_at"] for r in rounds if r["closing_at"] is not None]
    round_s = [r["published"] - r["started"] for r in rounds]
    return {
        "jobs_completed": float(len(done)),
        "container_s": sum(w["exited"] - w["spawned"] for w in workers),
        "cpu_s": sum(w["cpu_s"] for w in workers),
        "deploys": float(len(workers)),
        "deploy_s_median": statistics.median(w["ready"] - w["spawned"] for w in workers),
        "latency_median": statistics.median(latency),
        "latency_p95": float(np.percentile(latency, 95)),
        "round_median": statistics.median(round_s),
        "job_completion_median": statistics.median(j["finished"] - j["created"] for j in jobs),
        "died": float(sum(1 for w in workers if str(w["outcome"]).startswith("died"))),
        "completed": sorted(names[j] for j in done),
        "per_job": {
            names[j]: sum(w["exited"] - w["spawned"] for w in workers if w["job"] == j)
            for j in done
        },
        "per_job_life": {names[j["id"]]: j["finished"] - j["created"] for j in jobs},
    }


def run(s: Setting, policy: str, pool: int, seed: int, tmp: Path) -> dict[str, Any]:
    state = tmp / f"{s.name}-{policy}-{pool}"
    srv = Server(state, ("--aggregation", policy, "--workers", str(pool), "--grace-s", "10"))
    try:
        admin = Admin(srv.url, srv.token)
        pop, inter = population(s.jobs * s.per_job, seed)
        parties = Parties(pop, inter, s.per_job, 8.0 * s.nbytes)
        js = spec(s, deadline_s=30.0 if s.nbytes < 1e6 else 90.0)
        layout = blueprint(js).layout
        gen = torch.Generator().manual_seed(seed)
        creds: list[tuple[int, int, auth.Credential]] = []
        job_ids = []
        for j in range(s.jobs):
            job = admin.create_job(f"job{j}", js)
            job_ids.append(job)
            for p in range(s.per_job):
                key = auth.new_key()
                admin.enroll(job, f"p{p}", auth.b64(auth.public_key_bytes(key)))
                creds.append(
                    (j, p, auth.Credential(srv.url, job, f"p{p}", auth.private_bytes(key)))
                )
        deltas = {j: 0.001 * torch.randn(layout.numel, generator=gen) for j in range(s.jobs)}
        t0 = time.time()

        def arrival_of(j: int, p: int) -> Any:
            return lambda r, now_v: parties.arrival(j, p, r, now_v)

        async def main() -> None:
            stop, rounds = asyncio.Event(), Rounds()
            tasks = [
                asyncio.create_task(
                    party(
                        srv.url, c, layout, deltas[j], arrival_of(j, p), t0, s.scale, rounds, stop
                    )
                )
                for j, p, c in creds
            ]
            tasks.append(asyncio.create_task(rounds.watch(admin, job_ids, stop)))
            limit = time.monotonic() + 900
            while time.monotonic() < limit:
                await asyncio.sleep(1.0)
                status = await asyncio.to_thread(admin.jobs)
                for x in status:  # its parties cannot make the quorum: it never completes
                    if x["status"] == "running" and x["rounds_failed"] >= 2:
                        await asyncio.to_thread(admin.stop, x["job"])
                if all(x["status"] != "running" for x in status):
                    break
            stop.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run(main())
        wall = time.time() - t0
        status = admin.jobs()
        for _ in range(60):  # the last workers exit after their jobs end
            measured = admin._json("GET", "/v1/dashboard")  # with the service's own EWMAs
            if measured["totals"]["live_workers"] == 0:
                break
            time.sleep(0.25)
    finally:
        srv.stop()
    out = ledger(state, {job: j for j, job in enumerate(job_ids)})
    out["wall_s"] = wall
    out["jobs_done"] = float(sum(1 for x in status if x["status"] == "done"))
    out["fuse_s_per_update"] = float(measured["fuse_s"])
    out["deploy_s_ewma"] = float(measured["deploy_s"])
    return out


def predicted_saving(
    s: Setting, seed: int, pool: int, deploy_wall: float, fuse_wall: float, keep: list[int]
) -> float:
    """The simulator's JIT saving vs eager for this setting (``fedtempo.sim.jit`` on the same
    arrival model), deploy and fusion as this service measured them, over the jobs ``keep``
    that completed live."""
    pop, inter = population(s.jobs * s.per_job, seed)
    parties = Parties(pop, inter, s.per_job, 8.0 * s.nbytes)
    deploy_v, fuse_v = deploy_wall * s.scale, fuse_wall * s.scale
    jobs = make_jobs(parties, s.jobs, s.per_job, s.rounds, deploy_v, fuse_v)
    jobs = [
        type(j)(j.job, j.parties, j.rounds, s.quorum, j.deploy_s, j.fuse_s, j.profile_s)
        for j in jobs
    ]
    sets = JitSettings(safety_sd=1.0, alpha=0.3, margin_s=0.25 * s.scale, grace_s=10.0 * s.scale)
    held = {}
    for policy in ("eager", "jit"):
        env = simpy.Environment()
        svc = AggregationService(
            env,
            jobs,
            parties.arrival,
            policy=policy,  # type: ignore[arg-type]
            pool=pool,
            ready=lambda job, party, t: parties.ready(job * parties.per_job + party, t),
            settings=sets,
        )
        procs = svc.start()
        env.run(until=env.all_of([procs[j] for j in keep]))  # the jobs that complete
        svc.close()
        held[policy] = sum(svc.metrics[j].aggregator_s for j in keep)
    return 1 - held["jit"] / held["eager"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--large", action="store_true", help="also the ~10 MB model setting")
    ap.add_argument("--only", help="run only this setting (100KB or 10MB)")
    args = ap.parse_args(argv)
    figures: dict[str, float] = {}
    targets: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for s in settings(args.quick, args.large or args.only == "10MB"):
            if args.only and s.name != args.only:
                continue
            eager_pool = max(s.pools)
            for pool in s.pools:
                tag = f"{s.name}_C{pool}"
                # eager under a tight pool runs the jobs in waves (a worker per job for its
                # life); its C is the generous one, and every run also reports what eager would
                # have held in that run itself (each job's life: the eager-equivalent)
                policies = ("eager", "lazy", "jit") if pool == eager_pool else ("lazy", "jit")
                res = {}
                for policy in policies:
                    print(f"{tag} {policy} ...", flush=True)
                    res[policy] = run(s, policy, pool, args.seed, Path(tmp))
                    print(json.dumps({"run": f"{tag}_{policy}", **res[policy]}), flush=True)
                    for k, v in res[policy].items():
                        if k not in ("completed", "per_job", "per_job_life"):
                            figures[f"{tag}_{policy}_{k}"] = v
                # compared over the jobs every policy completed
                keep = sorted(set.intersection(*(set(r.pop("completed")) for r in res.values())))
                figures[f"{tag}_jobs_compared"] = float(len(keep))
                per_job = {pol: r.pop("per_job") for pol, r in res.items()}
                lives = {pol: r.pop("per_job_life") for pol, r in res.items()}
                held = {pol: sum(per.get(j, 0.0) for j in keep) for pol, per in per_job.items()}
                for policy in res:
                    life = sum(lives[policy].get(j, 0.0) for j in keep)
                    figures[f"{tag}_{policy}_saving_vs_eager_equivalent"] = 1 - held[policy] / life
                if "eager" not in res:
                    continue
                eager = res["eager"]
                for policy in ("lazy", "jit"):
                    figures[f"{tag}_{policy}_saving_vs_eager"] = 1 - held[policy] / held["eager"]
                added = (res["jit"]["latency_median"] - eager["latency_median"]) / eager[
                    "round_median"
                ]
                figures[f"{tag}_jit_added_latency_share_of_round"] = added
                predicted = predicted_saving(
                    s,
                    args.seed,
                    pool,
                    res["jit"]["deploy_s_median"],
                    res["jit"]["fuse_s_per_update"],
                    keep,
                )
                figures[f"{tag}_sim_predicted_jit_saving"] = predicted
                saving = figures[f"{tag}_jit_saving_vs_eager"]
                gap = abs(predicted - saving)
                targets[f"{tag}: JIT >= 70% fewer container-s than eager"] = {
                    "value": saving,
                    "met": saving >= 0.7,
                }
                targets[f"{tag}: JIT added latency <= 2% of median round"] = {
                    "value": added,
                    "met": added <= 0.02,
                }
                targets[f"{tag}: simulator's predicted saving within 5 points"] = {
                    "value": gap,
                    "met": gap <= 0.05,
                }
    name = "W-jit-live" if not args.only else f"W-jit-live-{args.only}"
    report(name, name, figures, targets, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())

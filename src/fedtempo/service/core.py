"""The server's state behind the HTTP API: the store, the live jobs, the admin credential, the
aggregator workers, and the checks every request passes (admin token, party signature, nonce)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import secrets
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import Request

from fedtempo.service import auth, wire
from fedtempo.service.accounting import Accounting
from fedtempo.service.aggregation import Aggregation, AggregationSettings
from fedtempo.service.asyncjob import AsyncJob
from fedtempo.service.jobs import Blueprint, Job, JobFactory, Rejected
from fedtempo.service.rounds import RoundsJob
from fedtempo.service.store import Store, StoreError
from fedtempo.service.workers import ForkLauncher, Launcher

log = logging.getLogger("fedtempo.service")


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
        # long-polling parties of each job: party id -> the futures their /work requests await
        self._waiters: dict[str, dict[int, list[asyncio.Future[None]]]] = {}
        self._nonces: set[tuple[str, str]] = set()  # staged, not yet committed
        self.auth_failures = 0
        self._last_purge = clock()  # the first purge waits its period: no commit at start
        self.accounting = Accounting(self.store, clock)
        self.aggregation = Aggregation(
            aggregation or AggregationSettings(),
            launcher or ForkLauncher(self.store.blobs),
            lambda: self.jobs,
            clock,
            self.changed,
            self.accounting,
        )

    def changed(self, job_id: str) -> None:
        """Something of the job changed: wake the long-polling parties it may concern (the
        job says which: all of them, or for an asynchronous job those with a task now and as
        many others as slots are free, not a herd per upload), and its aggregation."""
        waiters = self._waiters.get(job_id)
        job = self.jobs.get(job_id)
        if waiters and job is not None:
            for party in job.to_wake(list(waiters)):
                for future in waiters.pop(party, []):
                    if not future.done():
                        future.set_result(None)
        self.aggregation.notify(job_id)

    def waiter(self, job_id: str, party: int) -> asyncio.Future[None]:
        """A future ``changed`` resolves when the job may have work for ``party``."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, {}).setdefault(party, []).append(future)
        return future

    def unwait(self, job_id: str, party: int, future: asyncio.Future[None]) -> None:
        mine = self._waiters.get(job_id, {}).get(party)
        if mine is not None and future in mine:
            mine.remove(future)
            if not mine:
                del self._waiters[job_id][party]

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
            off = f"{abs(now - stamp):.0f} s {'ahead of' if stamp > now else 'behind'}"
            raise Rejected(
                401,
                f"request timestamp outside the {auth.WINDOW_S:.0f} s window: the party's clock "
                f"is {off} the server's (fix the clock, e.g. with NTP)"
                if math.isfinite(stamp)
                else "request timestamp is not a number",
            )
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

    def tick_all(self) -> None:
        """Deadlines, leases and the aggregation policy (the ticker, every ``TICK_S``)."""
        now = self.clock()
        if now - self._last_purge > 10.0:
            with self.store.tx() as db:
                db.execute("DELETE FROM nonces WHERE ts < ?", (now - 2 * auth.WINDOW_S,))
            self._last_purge = now
        for job_id, job in list(self.jobs.items()):
            try:
                before = (job.current_version(), job.status)
                job.tick(now)
                if (job.current_version(), job.status) != before or job.waiting:
                    self.changed(job_id)
            except (Rejected, StoreError, sqlite3.Error) as exc:
                log.warning("job %s: tick failed: %s", job_id, exc)
        try:
            self.aggregation.step()
        except (StoreError, sqlite3.Error) as exc:
            log.warning("aggregation step failed: %s", exc)

    def settle(self) -> None:
        """Commit what a request staged (its nonce) if its own transaction did not."""
        try:
            self.store.flush()
        finally:
            self._nonces.clear()

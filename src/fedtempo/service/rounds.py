"""Synchronous rounds of a ``RoundAlgorithm`` (FedAvg, FedProx) on the wall clock.

A round is 'open' while its cohort trains, 'closing' once it has what it needs (the whole
cohort, or ``quorum`` updates with ``close_at_quorum``, or ``quorum`` at its deadline), and
'closed' when an aggregator worker (``service.aggregation``) has fused its updates with the
job's rule and the model is published. This process never fuses: it stores updates, closes
rounds and commits what the workers wrote."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedtempo.algorithms.protocol import ModelState, RoundAlgorithm, RoundPlan
from fedtempo.client.local import Update
from fedtempo.rng import Streams
from fedtempo.service import wire
from fedtempo.service.jobs import (
    POLL_FRESH_S,
    Envelope,
    Job,
    Rejected,
)
from fedtempo.system.availability import Availability


class ServiceView:
    """The ``RoundView`` of a round on the network: dispatch numbers are known; device times
    are not (an algorithm that plans with them cannot run as a service yet)."""

    def __init__(self, now: float, dispatches: Mapping[int, int]) -> None:
        self._now, self._dispatches = now, dispatches

    @property
    def now(self) -> float:
        return self._now

    @property
    def availability(self) -> Availability:
        raise Rejected(422, "this algorithm plans with device availability, unknown to a service")

    def dispatch(self, client: int) -> int:
        return self._dispatches[client]

    def _unknown(self) -> float:
        raise Rejected(422, "this algorithm plans with device times, unknown to a service")

    def compute_time(self, client: int, flops: float) -> float:
        return self._unknown()

    def upload_time(self, client: int, bits: float) -> float:
        return self._unknown()

    def download_time(self, client: int, bits: float) -> float:
        return self._unknown()

    def uplink_snr_per_hz(self, client: int) -> float:
        return self._unknown()


@dataclass
class OpenRound:
    number: int
    cohort: tuple[int, ...]
    dispatches: dict[int, int]
    started: float
    deadline: float | None
    plan: RoundPlan
    got: dict[int, tuple[Update, float]]
    closing: float | None = None  # when the round closed (its model is being fused)
    partial: str | None = None  # a partial sum handed back to the store ...
    partial_seq: int = 0  # ... covering the round's updates up to this seq

    def task_id(self, party: int) -> str:
        return f"r{self.number}-p{party}"


class RoundsJob(Job):
    """Synchronous rounds of a ``RoundAlgorithm`` on the wall clock."""

    state: ModelState
    open: OpenRound | None
    last_closed: OpenRound | None = None  # the last round published (its arrivals)

    def algorithm(self) -> RoundAlgorithm[ModelState]:
        assert self.bp.rounds is not None
        return self.bp.rounds(self.samples())

    def load(self) -> None:
        version = self.current_version()
        self.state = ModelState(self.vector(version), version)
        self.open = None
        db = self.store.db
        row = db.execute(
            "SELECT * FROM rounds WHERE job=? AND status IN ('open', 'closing')", (self.id,)
        ).fetchone()
        if row is None:
            return
        info = json.loads(row["cohort"])
        cohort = tuple(int(c) for c in info["cohort"])
        dispatches = {int(k): int(v) for k, v in info["dispatches"].items()}
        plan = self.algorithm().plan_round(
            self.state, cohort, ServiceView(row["started"], dispatches)
        )
        got = {}
        for u in db.execute(
            "SELECT * FROM updates WHERE job=? AND round=? AND status='buffered'",
            (self.id, row["number"]),
        ):
            got[int(u["party"])] = (self.stored_update(u), float(u["received"]))
        self.open = OpenRound(
            int(row["number"]),
            cohort,
            dispatches,
            float(row["started"]),
            row["deadline"],
            plan,
            got,
            row["closing_at"] if row["status"] == "closing" else None,
            row["partial"],
            int(row["partial_seq"] or 0),
        )

    def _task(self, r: OpenRound, party: int) -> dict[str, Any]:
        job = next(p.job for p in r.plan.clients if p.client == party)
        return {
            "task": r.task_id(party),
            "round": r.number,
            "base_version": job.base_version,
            "dispatch": job.dispatch,
            "epochs": job.epochs,
            "deadline": r.deadline,
        }

    def work(self, party: int, now: float) -> dict[str, Any] | None:
        self.seen[party] = now
        if self.status != "running":
            return {"done": True}
        r = self.open
        if r is not None and r.closing is None and party in r.cohort and party not in r.got:
            return self._task(r, party)
        self.waiting.setdefault(party, now)  # since when it waits (its long-polls repeat)
        if r is None:
            self._maybe_start(now)
            r = self.open
            if r is not None and party in r.cohort:
                return self._task(r, party)
        return None

    def _maybe_start(self, now: float) -> None:
        # waiting since ``waiting[p]``, and still asking (a party that went away is left out)
        fresh = sorted(p for p in self.waiting if now - self.seen.get(p, -math.inf) <= POLL_FRESH_S)
        samples = self.samples()
        need = self.s.clients_per_round or len(samples)  # None: every enrolled party
        ready = [p for p in fresh if p < len(samples) and samples[p] > 0]
        if not ready:
            return
        first = min(self.waiting[p] for p in ready)
        if len(ready) < need and not (
            len(ready) >= self.s.quorum and now - first >= self.s.gather_s
        ):
            return
        row = self.row()
        number = int(row["rounds_done"]) + int(row["rounds_failed"])
        rng = Streams(self.s.seed).numpy("service-cohort", number)
        size = min(need, len(ready))
        cohort = tuple(sorted(int(c) for c in rng.choice(np.array(ready), size, replace=False)))
        db = self.store.db
        dispatches = {
            c: int(
                db.execute(
                    "SELECT dispatches FROM parties WHERE job=? AND id=?", (self.id, c)
                ).fetchone()[0]
            )
            for c in cohort
        }
        plan = self.algorithm().plan_round(self.state, cohort, ServiceView(now, dispatches))
        deadline = now + self.s.deadline_s if self.s.deadline_s is not None else None
        info = json.dumps({"cohort": list(cohort), "dispatches": dispatches})
        with self.store.tx():
            db.execute(
                "INSERT INTO rounds (job, number, cohort, started, deadline, status) "
                "VALUES (?,?,?,?,?, 'open')",
                (self.id, number, info, now, deadline),
            )
            for c in cohort:
                db.execute(
                    "UPDATE parties SET dispatches = dispatches + 1 WHERE job=? AND id=?",
                    (self.id, c),
                )
        self.open = OpenRound(number, cohort, dispatches, now, deadline, plan, {})
        for c in cohort:
            self.waiting.pop(c, None)

    def admit(self, party: int, env: Envelope, vector: torch.Tensor) -> Update:
        r = self.open
        if r is None or env.task != r.task_id(party) or r.closing is not None:
            raise Rejected(409, f"late: task {env.task} is not part of an open round", "late")
        if party in r.got:
            raise Rejected(
                409, f"round {r.number}: this party already uploaded", "already uploaded"
            )
        if env.base_version != self.state.version:
            raise Rejected(409, f"unknown base version {env.base_version}", "unknown base version")
        return Update(party, 0, env.base_version, vector, env.samples, env.steps, env.loss)

    def apply(
        self, party: int, key: str, env: Envelope, update: Update, sha: str, now: float
    ) -> tuple[dict[str, Any], set[str]]:
        r = self.open
        assert r is not None
        self.insert_update(party, key, env, sha, now, "buffered", r.number, None)
        r.got[party] = (update, now)
        full = len(r.got) == len(r.cohort)
        if full or (self.s.close_at_quorum and len(r.got) >= self.s.quorum):
            self._mark_closing(now)
        return {"status": "accepted", "round": r.number}, set()

    def _mark_closing(self, now: float) -> None:
        """Inside a transaction: the round takes no more updates; its model is to be fused."""
        r = self.open
        assert r is not None
        self.store.db.execute(
            "UPDATE rounds SET status='closing', closing_at=? WHERE job=? AND number=?",
            (now, self.id, r.number),
        )
        r.closing = now

    def pending(self, after_seq: int) -> list[Any]:
        """The open round's stored updates past ``after_seq``, in arrival (seq) order."""
        r = self.open
        if r is None:
            return []
        return self.store.db.execute(
            "SELECT seq, sha, samples FROM updates WHERE job=? AND round=? AND status='buffered' "
            "AND seq > ? ORDER BY seq",
            (self.id, r.number, after_seq),
        ).fetchall()

    def record_partial(self, number: int, sha: str, seq: int) -> None:
        """A worker handed back the open round's running sum up to ``seq`` (stored as ``sha``)."""
        r = self.open
        if r is None or r.number != number:
            return
        old = r.partial
        with self.store.tx() as db:
            db.execute(
                "UPDATE rounds SET partial=?, partial_seq=? WHERE job=? AND number=?",
                (sha, seq, self.id, number),
            )
        r.partial, r.partial_seq = sha, seq
        if old is not None and old != sha:
            self.store.delete_blobs({old})

    def publish_round(self, number: int, sha: str, now: float) -> None:
        """Commit the model a worker fused for the closing round ``number`` (blob ``sha``):
        it becomes the next version, the round's updates are applied and their blobs freed."""
        r, db = self.open, self.store.db
        if r is None or r.number != number or r.closing is None:
            raise Rejected(409, f"round {number} is not closing")
        params = wire.parse(self.bp.layout, self.store.get_blob(sha))[0]  # checks the worker
        try:
            with self.store.tx():
                freed = self.publish_sha(self.state.version + 1, sha, set())
                shas = db.execute(
                    "SELECT sha FROM updates WHERE job=? AND round=? AND status='buffered'",
                    (self.id, r.number),
                ).fetchall()
                freed |= {str(x[0]) for x in shas}
                if r.partial is not None:
                    freed.add(r.partial)
                db.execute(
                    "UPDATE updates SET status='applied' WHERE job=? AND round=?",
                    (self.id, r.number),
                )
                db.execute(
                    "UPDATE rounds SET status='closed', version=?, published=?, partial=NULL "
                    "WHERE job=? AND number=?",
                    (self.state.version + 1, now, self.id, r.number),
                )
                db.execute(
                    "UPDATE jobs SET rounds_done = rounds_done + 1, accepted = accepted + ?, "
                    "received = received + ? WHERE id=?",
                    (len(r.got), len(r.got), self.id),
                )
                if int(self.row()["rounds_done"]) >= self.s.rounds:
                    self._finish_job(f"{self.s.rounds} rounds done", now)
        except BaseException:
            self.load()
            raise
        self.state = ModelState(params, self.state.version + 1)
        self.open, self.last_closed = None, r
        self.store.delete_blobs(freed)

    def tick(self, now: float) -> None:
        r = self.open
        if r is None:
            if self.status == "running" and self.waiting:
                self._maybe_start(now)
            return
        if r.closing is not None or r.deadline is None or now < r.deadline:
            return
        freed: set[str] = set()
        try:
            with self.store.tx() as db:
                if len(r.got) >= self.s.quorum:
                    self._mark_closing(now)
                else:  # the round fails: its updates are dropped, with their reason counted
                    shas = db.execute(
                        "SELECT sha FROM updates WHERE job=? AND round=? AND status='buffered'",
                        (self.id, r.number),
                    ).fetchall()
                    freed = {str(x[0]) for x in shas} | ({r.partial} if r.partial else set())
                    db.execute(
                        "UPDATE updates SET status='rejected' WHERE job=? AND round=?",
                        (self.id, r.number),
                    )
                    db.execute(
                        "UPDATE rounds SET status='failed', partial=NULL WHERE job=? AND number=?",
                        (self.id, r.number),
                    )
                    db.execute(
                        "UPDATE jobs SET rounds_failed = rounds_failed + 1, "
                        "received = received + ? WHERE id=?",
                        (len(r.got), self.id),
                    )
                    if r.got:
                        db.execute(
                            "INSERT INTO rejections VALUES (?,?,?) ON CONFLICT(job, reason) "
                            "DO UPDATE SET count = count + excluded.count",
                            (self.id, "round failed: quorum not reached", len(r.got)),
                        )
                    self.open = None
        except BaseException:
            self.load()
            raise
        self.store.delete_blobs(freed)

    def status_extra(self) -> dict[str, Any]:
        r = self.open
        if r is None:
            return {"round": None}
        return {
            "round": {
                "number": r.number,
                "cohort": list(r.cohort),
                "received": len(r.got),
                "deadline": r.deadline,
                "closing": r.closing is not None,
            }
        }

"""A job on the wall clock: the second driver of ``fedtempo.algorithms``' objects.

``RoundsJob`` drives a ``RoundAlgorithm`` (FedAvg/FedProx): a round starts when enough parties
ask for work, its cohort is sampled among them, and it closes when every cohort member has
uploaded, or at its absolute deadline with at least ``quorum`` updates (else it fails and a new
one starts). ``AsyncJob`` drives an ``AsyncAlgorithm`` (FedAsync, FedBuff, AsyncFedED): up to
``concurrency`` parties train at once and every upload is folded in at once, the next local
epochs returned with the answer.

Every change is persisted in the same transaction as the ledger rows that describe it; the
in-memory state is rebuilt from the store at start (and after a failed commit), so that what
the job holds is always what the disk holds. Nothing here is a second copy of an aggregation
rule: the algorithm objects do all of the maths.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from fedtempo.aggregation.versions import VersionStore
from fedtempo.algorithms.asynchronous import AsyncAlgorithm, AsyncRunState
from fedtempo.algorithms.protocol import (
    ClientResult,
    ModelState,
    RoundAlgorithm,
    RoundOutcome,
    RoundPlan,
)
from fedtempo.client.local import Update
from fedtempo.rng import Streams
from fedtempo.service import wire
from fedtempo.service.store import Store, failpoint
from fedtempo.system.availability import Availability

POLL_FRESH_S = 60.0  # a party that asked for work this recently counts as waiting (online)
IDLE_FRESH_S = 35.0  # an idle party is dispatched to only if it asked this recently


@dataclass(frozen=True)
class JobSettings:
    """How the service drives a job (wall seconds). ``clients_per_round`` None: every enrolled
    party with data; ``quorum``: updates a round needs at its deadline; ``gather_s``: how long
    a round waits for more parties once ``quorum`` of them ask."""

    kind: Literal["rounds", "async"]
    seed: int = 0
    rounds: int = 1
    clients_per_round: int | None = None
    quorum: int = 1
    deadline_s: float | None = None
    gather_s: float = 5.0
    concurrency: int = 1
    max_updates: int | None = None
    task_timeout_s: float = 600.0


@dataclass(frozen=True)
class Blueprint:
    """What the service needs to run a job, built from its spec by an injected factory
    (``fedtempo.experiment.deploy`` for fedtempo's own configs)."""

    layout: wire.Layout
    initial: torch.Tensor
    settings: JobSettings
    algorithm: str
    rounds: Callable[[Sequence[int]], RoundAlgorithm[ModelState]] | None = None
    asynchronous: AsyncAlgorithm | None = None


JobFactory = Callable[[Mapping[str, Any]], Blueprint]


class Rejected(Exception):
    """A request the job refuses: ``status`` (HTTP 4xx) and the reason the party reads."""

    def __init__(self, status: int, reason: str, code: str | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.code = status, reason, code or reason


@dataclass(frozen=True)
class Envelope:
    """An update's metadata, from its safetensors ``__metadata__``."""

    task: str
    base_version: int
    samples: int
    steps: int
    loss: float

    @staticmethod
    def parse(meta: Mapping[str, str]) -> Envelope:
        try:
            env = Envelope(
                str(meta["task"]),
                int(meta["base_version"]),
                int(meta["samples"]),
                int(meta["steps"]),
                float(meta["loss"]),
            )
        except KeyError as exc:
            raise Rejected(422, f"update metadata lacks {exc.args[0]!r}", "bad metadata") from None
        except ValueError:
            raise Rejected(
                422,
                "update metadata: base_version, samples, steps must be integers and loss a number",
            ) from None
        if env.samples < 0 or env.steps < 0 or not math.isfinite(env.loss):
            raise Rejected(
                422, "update metadata: negative samples/steps or non-finite loss", "bad metadata"
            )
        return env

    def to_meta(self) -> dict[str, str]:
        return {
            "task": self.task,
            "base_version": str(self.base_version),
            "samples": str(self.samples),
            "steps": str(self.steps),
            "loss": repr(self.loss),
        }


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


class Job:
    """What both kinds of job share: identity, parties, versions, rejection counts."""

    def __init__(self, job_id: str, store: Store, blueprint: Blueprint) -> None:
        self.id, self.store, self.bp = job_id, store, blueprint
        self.s = blueprint.settings
        self.waiting: dict[int, float] = {}  # party id -> when it last asked for work, idle
        self.seen: dict[int, float] = {}  # party id -> its last request (online if recent)
        self.load()

    # ---- durable state ----------------------------------------------------------------------

    def row(self) -> Any:
        return self.store.db.execute("SELECT * FROM jobs WHERE id=?", (self.id,)).fetchone()

    @property
    def status(self) -> str:
        return str(self.row()["status"])

    def load(self) -> None:
        """(Re)build the in-memory state from the store."""
        raise NotImplementedError

    def vector(self, version: int) -> torch.Tensor:
        row = self.store.db.execute(
            "SELECT sha FROM versions WHERE job=? AND version=?", (self.id, version)
        ).fetchone()
        if row is None:
            raise Rejected(404, f"version {version} is not kept (no party holds it)")
        return wire.parse(self.bp.layout, self.store.get_blob(row["sha"]))[0]

    def version_blob(self, version: int) -> bytes:
        row = self.store.db.execute(
            "SELECT sha FROM versions WHERE job=? AND version=?", (self.id, version)
        ).fetchone()
        if row is None:
            raise Rejected(404, f"version {version} is not kept (no party holds it)")
        return self.store.get_blob(row["sha"])

    def current_version(self) -> int:
        return int(self.row()["version"])

    def publish(self, version: int, params: torch.Tensor, keep: set[int]) -> set[str]:
        """Inside a transaction: store ``params`` as ``version``, make it current, drop the
        versions outside ``keep``; returns the blobs that became unreferenced."""
        sha = self.store.put_blob(wire.encode(self.bp.layout, params))
        db = self.store.db
        db.execute("INSERT OR REPLACE INTO versions VALUES (?,?,?)", (self.id, version, sha))
        db.execute("UPDATE jobs SET version=? WHERE id=?", (version, self.id))
        keep = keep | {version}
        old = db.execute("SELECT version, sha FROM versions WHERE job=?", (self.id,)).fetchall()
        freed = set()
        for r in old:
            if r["version"] not in keep:
                db.execute(
                    "DELETE FROM versions WHERE job=? AND version=?", (self.id, r["version"])
                )
                freed.add(str(r["sha"]))
        return freed

    def count_rejection(self, reason: str) -> None:
        with self.store.tx() as db:
            db.execute(
                "INSERT INTO rejections VALUES (?,?,1) ON CONFLICT(job, reason) "
                "DO UPDATE SET count = count + 1",
                (self.id, reason),
            )

    def samples(self) -> list[int]:
        rows = self.store.db.execute(
            "SELECT id, samples FROM parties WHERE job=? ORDER BY id", (self.id,)
        ).fetchall()
        out = [0] * (max((r["id"] for r in rows), default=-1) + 1)
        for r in rows:
            out[r["id"]] = int(r["samples"])
        return out

    def set_samples(self, party: int, samples: int) -> None:
        row = self.store.db.execute(
            "SELECT samples FROM parties WHERE job=? AND id=?", (self.id, party)
        ).fetchone()
        if row is not None and int(row["samples"]) != samples:
            with self.store.tx() as db:
                db.execute(
                    "UPDATE parties SET samples=? WHERE job=? AND id=?", (samples, self.id, party)
                )

    def _finish_job(self, reason: str) -> None:
        self.store.db.execute(
            "UPDATE jobs SET status='done', done_reason=? WHERE id=?", (reason, self.id)
        )

    # ---- requests ---------------------------------------------------------------------------

    def work(self, party: int, now: float) -> dict[str, Any] | None:
        """A task for ``party`` (or {"done": True}), or None when there is none now."""
        raise NotImplementedError

    def admit(self, party: int, env: Envelope, vector: torch.Tensor) -> Update:
        """The update as the algorithm sees it, or Rejected (no state change)."""
        raise NotImplementedError

    def apply(
        self, party: int, key: str, env: Envelope, update: Update, sha: str, now: float
    ) -> tuple[dict[str, Any], set[str]]:
        """Inside a transaction: fold in ``update``; returns the answer and freed blobs."""
        raise NotImplementedError

    def tick(self, now: float) -> None:
        """Deadlines and leases (called periodically)."""

    def upload(self, party: int, key: str, body: bytes, now: float) -> dict[str, Any]:
        """Validate, store durably, apply; the answer is returned only once it is on disk.
        A retried upload (same key) gets the first answer again and changes nothing."""
        db = self.store.db
        prior = db.execute(
            "SELECT response FROM updates WHERE job=? AND party=? AND key=?",
            (self.id, party, key),
        ).fetchone()
        if prior is not None:
            return {**json.loads(prior["response"]), "duplicate": True}
        if self.status != "running":
            raise Rejected(409, f"job {self.id} is {self.status}")
        try:
            vector, meta = wire.parse(self.bp.layout, body)
        except wire.WireError as exc:
            raise Rejected(422, str(exc), exc.code) from None
        env = Envelope.parse(meta)
        update = self.admit(party, env, vector)
        sha = self.store.put_blob(body)
        failpoint("after-blob-write")
        try:
            with self.store.tx():
                answer, freed = self.apply(party, key, env, update, sha, now)
                db.execute(
                    "UPDATE updates SET response=? WHERE job=? AND party=? AND key=?",
                    (json.dumps(answer), self.id, party, key),
                )
        except BaseException:
            self.load()  # the disk is the truth: forget what the failed transaction did
            raise
        failpoint("before-ack")
        self.store.delete_blobs(freed)
        return answer

    def insert_update(
        self,
        party: int,
        key: str,
        env: Envelope,
        sha: str,
        now: float,
        status: str,
        round_no: int | None,
        weight: float | None,
    ) -> None:
        self.store.db.execute(
            "INSERT INTO updates VALUES (?,?,?,(SELECT COALESCE(MAX(seq), 0) + 1 FROM "
            "updates WHERE job=?),?,?,?,?,?,?,?,?,?,?,'{}')",
            (
                self.id,
                party,
                key,
                self.id,
                env.task,
                env.base_version,
                round_no,
                sha,
                env.samples,
                env.steps,
                env.loss,
                weight,
                now,
                status,
            ),
        )

    def status_extra(self) -> dict[str, Any]:
        return {}

    def describe(self, now: float) -> dict[str, Any]:
        r, db = self.row(), self.store.db
        rejected = {
            str(x["reason"]): int(x["count"])
            for x in db.execute("SELECT reason, count FROM rejections WHERE job=?", (self.id,))
        }
        enrolled = db.execute("SELECT COUNT(*) FROM parties WHERE job=?", (self.id,)).fetchone()[0]
        online = sum(1 for t in self.seen.values() if now - t <= POLL_FRESH_S)
        training = db.execute(
            "SELECT COUNT(*) FROM tasks WHERE job=? AND open=1", (self.id,)
        ).fetchone()[0]
        kept = [
            int(x[0])
            for x in db.execute(
                "SELECT version FROM versions WHERE job=? ORDER BY version", (self.id,)
            )
        ]
        return {
            "job": self.id,
            "name": r["name"],
            "algorithm": self.bp.algorithm,
            "kind": self.s.kind,
            "status": r["status"],
            "done_reason": r["done_reason"],
            "version": int(r["version"]),
            "versions_kept": kept,
            "rounds_done": int(r["rounds_done"]),
            "rounds_failed": int(r["rounds_failed"]),
            "parties": {"enrolled": int(enrolled), "online": online, "training": int(training)},
            "updates": {
                "received": int(r["received"]),
                "accepted": int(r["accepted"]),
                "rejected": rejected,
            },
            **self.status_extra(),
        }


@dataclass
class OpenRound:
    number: int
    cohort: tuple[int, ...]
    dispatches: dict[int, int]
    started: float
    deadline: float | None
    plan: RoundPlan
    got: dict[int, tuple[Update, float]]

    def task_id(self, party: int) -> str:
        return f"r{self.number}-p{party}"


class RoundsJob(Job):
    """Synchronous rounds of a ``RoundAlgorithm`` on the wall clock."""

    state: ModelState
    open: OpenRound | None

    def algorithm(self) -> RoundAlgorithm[ModelState]:
        assert self.bp.rounds is not None
        return self.bp.rounds(self.samples())

    def load(self) -> None:
        version = self.current_version()
        self.state = ModelState(self.vector(version), version)
        self.open = None
        db = self.store.db
        row = db.execute(
            "SELECT * FROM rounds WHERE job=? AND status='open'", (self.id,)
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
            vec = wire.parse(self.bp.layout, self.store.get_blob(u["sha"]))[0]
            upd = Update(
                int(u["party"]),
                0,
                int(u["base_version"]),
                vec,
                int(u["samples"]),
                int(u["steps"]),
                float(u["loss"]),
            )
            got[int(u["party"])] = (upd, float(u["received"]))
        self.open = OpenRound(
            int(row["number"]),
            cohort,
            dispatches,
            float(row["started"]),
            row["deadline"],
            plan,
            got,
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
        if r is not None and party in r.cohort and party not in r.got:
            return self._task(r, party)
        self.waiting[party] = now
        if r is None:
            self._maybe_start(now)
            r = self.open
            if r is not None and party in r.cohort:
                return self._task(r, party)
        return None

    def _maybe_start(self, now: float) -> None:
        fresh = sorted(p for p, t in self.waiting.items() if now - t <= POLL_FRESH_S)
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
                "INSERT INTO rounds VALUES (?,?,?,?,?, 'open', NULL)",
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
        if r is None or env.task != r.task_id(party):
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
        answer: dict[str, Any] = {"status": "accepted", "round": r.number}
        freed: set[str] = set()
        if len(r.got) == len(r.cohort):
            freed = self._close(now)
            answer["version"] = self.state.version
        return answer, freed

    def _close(self, now: float) -> set[str]:
        """Inside a transaction: aggregate the open round and publish the next version."""
        r, db = self.open, self.store.db
        assert r is not None
        results = tuple(ClientResult(u, t - r.started, t) for _, (u, t) in sorted(r.got.items()))
        self.state = self.algorithm().aggregate(self.state, RoundOutcome(r.plan, results))
        freed = self.publish(self.state.version, self.state.params, set())
        shas = db.execute(
            "SELECT sha FROM updates WHERE job=? AND round=? AND status='buffered'",
            (self.id, r.number),
        ).fetchall()
        freed |= {str(x[0]) for x in shas}
        db.execute(
            "UPDATE updates SET status='applied' WHERE job=? AND round=?", (self.id, r.number)
        )
        db.execute(
            "UPDATE rounds SET status='closed', version=? WHERE job=? AND number=?",
            (self.state.version, self.id, r.number),
        )
        db.execute(
            "UPDATE jobs SET rounds_done = rounds_done + 1, accepted = accepted + ?, "
            "received = received + ? WHERE id=?",
            (len(results), len(results), self.id),
        )
        if int(self.row()["rounds_done"]) >= self.s.rounds:
            self._finish_job(f"{self.s.rounds} rounds done")
        self.open = None
        return freed

    def tick(self, now: float) -> None:
        r = self.open
        if r is None:
            if self.status == "running" and self.waiting:
                self._maybe_start(now)
            return
        if r.deadline is None or now < r.deadline:
            return
        try:
            with self.store.tx() as db:
                if len(r.got) >= self.s.quorum:
                    freed = self._close(now)
                else:  # the round fails: its updates are dropped, with their reason counted
                    shas = db.execute(
                        "SELECT sha FROM updates WHERE job=? AND round=? AND status='buffered'",
                        (self.id, r.number),
                    ).fetchall()
                    freed = {str(x[0]) for x in shas}
                    db.execute(
                        "UPDATE updates SET status='rejected' WHERE job=? AND round=?",
                        (self.id, r.number),
                    )
                    db.execute(
                        "UPDATE rounds SET status='failed' WHERE job=? AND number=?",
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
            }
        }


class AsyncJob(Job):
    """An ``AsyncAlgorithm`` on the wall clock: up to ``concurrency`` parties train at once."""

    state: AsyncRunState

    @property
    def alg(self) -> AsyncAlgorithm:
        assert self.bp.asynchronous is not None
        return self.bp.asynchronous

    def load(self) -> None:
        db = self.store.db
        current = self.current_version()
        tasks = db.execute(
            "SELECT base_version FROM tasks WHERE job=? AND open=1", (self.id,)
        ).fetchall()
        refs: dict[int, int] = {}
        for t in tasks:
            refs[int(t[0])] = refs.get(int(t[0]), 0) + 1
        params = {v: self.vector(v) for v in {current} | set(refs)}
        store = VersionStore.restore(current, params, refs)
        state = self.alg.init(params[current], (), current)
        state.rule.store = store
        for u in db.execute(
            "SELECT * FROM updates WHERE job=? AND status='buffered' ORDER BY seq", (self.id,)
        ):
            vec = wire.parse(self.bp.layout, self.store.get_blob(u["sha"]))[0]
            upd = Update(
                int(u["party"]),
                0,
                int(u["base_version"]),
                vec,
                int(u["samples"]),
                int(u["steps"]),
                float(u["loss"]),
            )
            state.rule.buffer.append((upd, float(u["weight"])))
        for p in db.execute(
            "SELECT id, next_epochs FROM parties WHERE job=? AND next_epochs IS NOT NULL",
            (self.id,),
        ):
            state.local_epochs[int(p[0])] = int(p[1])
        state.applied = int(self.row()["accepted"])
        self.state = state

    def _open_task(self, party: int) -> Any:
        return self.store.db.execute(
            "SELECT * FROM tasks WHERE job=? AND party=? AND open=1", (self.id, party)
        ).fetchone()

    @staticmethod
    def _task_json(t: Any) -> dict[str, Any]:
        return {
            "task": t["id"],
            "round": None,
            "base_version": int(t["base_version"]),
            "dispatch": int(t["dispatch"]),
            "epochs": t["epochs"],
            "deadline": None,
        }

    def work(self, party: int, now: float) -> dict[str, Any] | None:
        self.seen[party] = now
        if self.status != "running":
            return {"done": True}
        t = self._open_task(party)
        if t is not None:
            self.waiting.pop(party, None)
            return self._task_json(t)
        try:
            with self.store.tx():
                task = self._start(party, now)
        except BaseException:
            self.load()
            raise
        if task is None:
            self.waiting[party] = now
        else:
            self.waiting.pop(party, None)
        return task

    def _next_after_upload(self, party: int, now: float) -> dict[str, Any] | None:
        """Inside the upload's transaction: the freed slot goes, as in the simulator, to a
        random idle party among those asking for work and the uploader (the stream
        ("service-dispatch", n) for the n-th upload); the uploader's next task, if it won."""
        if self.status != "running":
            return {"done": True}
        idle = {p for p, t in self.waiting.items() if now - t <= IDLE_FRESH_S and p != party}
        candidates = sorted(idle | {party})
        chosen = party
        if len(candidates) > 1:
            n = int(self.row()["received"])
            rng = Streams(self.s.seed).numpy("service-dispatch", n)
            chosen = candidates[int(rng.integers(len(candidates)))]
        task = self._start(chosen, now)
        if chosen != party:
            if task is not None:
                self.waiting.pop(chosen, None)  # its long-poll finds the task
            return None
        return task

    def _start(self, party: int, now: float) -> dict[str, Any] | None:
        """Inside a transaction: a new task for ``party`` if a training slot is free."""
        db = self.store.db
        training = db.execute(
            "SELECT COUNT(*) FROM tasks WHERE job=? AND open=1", (self.id,)
        ).fetchone()[0]
        if training >= self.s.concurrency:
            return None
        dispatch = int(
            db.execute(
                "SELECT dispatches FROM parties WHERE job=? AND id=?", (self.id, party)
            ).fetchone()[0]
        )
        job = self.alg.start(self.state, party, dispatch)
        task_id = f"a{dispatch}-p{party}"
        db.execute(
            "INSERT INTO tasks VALUES (?,?,?,?,?,?,NULL,?,1)",
            (self.id, task_id, party, job.base_version, dispatch, job.epochs, now),
        )
        db.execute(
            "UPDATE parties SET dispatches = dispatches + 1, next_epochs=? WHERE job=? AND id=?",
            (job.epochs, self.id, party),
        )
        return {
            "task": task_id,
            "round": None,
            "base_version": job.base_version,
            "dispatch": dispatch,
            "epochs": job.epochs,
            "deadline": None,
        }

    def admit(self, party: int, env: Envelope, vector: torch.Tensor) -> Update:
        t = self._open_task(party)
        if t is None or t["id"] != env.task:
            raise Rejected(409, f"late: task {env.task} is not open (expired or answered)", "late")
        if env.base_version != int(t["base_version"]):
            raise Rejected(409, f"unknown base version {env.base_version}", "unknown base version")
        update = Update(party, 0, env.base_version, vector, env.samples, env.steps, env.loss)
        reason = self.alg.rule.check(self.state.rule, update)
        if reason:
            raise Rejected(422, reason)
        return update

    def apply(
        self, party: int, key: str, env: Envelope, update: Update, sha: str, now: float
    ) -> tuple[dict[str, Any], set[str]]:
        db = self.store.db
        outcome, k_next = self.alg.receive(self.state, update)
        self.alg.finish(self.state, update.base_version)
        assert outcome.accepted  # admit ran the rule's own check
        freed: set[str] = set()
        if outcome.version is not None:  # flushed: every buffered update is now applied
            rows = db.execute(
                "SELECT sha FROM updates WHERE job=? AND status='buffered'", (self.id,)
            ).fetchall()
            freed |= {str(x[0]) for x in rows} | {sha}
            db.execute(
                "UPDATE updates SET status='applied' WHERE job=? AND status='buffered'", (self.id,)
            )
        status = "buffered" if outcome.version is None else "applied"
        self.insert_update(party, key, env, sha, now, status, None, outcome.weight)
        db.execute("DELETE FROM tasks WHERE job=? AND id=?", (self.id, env.task))
        if self.alg.epochs is not None:
            db.execute(
                "UPDATE parties SET next_epochs=? WHERE job=? AND id=?", (k_next, self.id, party)
            )
        db.execute(
            "UPDATE jobs SET accepted = accepted + 1, received = received + 1 WHERE id=?",
            (self.id,),
        )
        if outcome.version is not None:
            freed |= self.publish(outcome.version, self.state.params, self._referenced())
        received = int(self.row()["received"])
        if self.s.max_updates is not None and received >= self.s.max_updates:
            self._finish_job(f"{self.s.max_updates} updates received")
        staleness = outcome.staleness
        answer = {
            "status": status,
            "version": outcome.version,
            "weight": outcome.weight,
            "staleness": None if staleness is None else staleness.versions,
            "next_epochs": k_next if self.alg.epochs is not None else None,
            # the party's next task rides along (one request and one commit instead of two)
            "next": self._next_after_upload(party, now),
        }
        return answer, freed

    def _referenced(self) -> set[int]:
        rows = self.store.db.execute(
            "SELECT base_version FROM tasks WHERE job=? AND open=1", (self.id,)
        ).fetchall()
        return {int(r[0]) for r in rows}

    def tick(self, now: float) -> None:
        db = self.store.db
        stale = db.execute(
            "SELECT id, base_version FROM tasks WHERE job=? AND open=1 AND issued < ?",
            (self.id, now - self.s.task_timeout_s),
        ).fetchall()
        if not stale:
            return
        try:
            with self.store.tx():
                for t in stale:
                    db.execute("DELETE FROM tasks WHERE job=? AND id=?", (self.id, t["id"]))
                    self.alg.finish(self.state, int(t["base_version"]))
                keep = self._referenced() | {self.state.version}
                rows = db.execute(
                    "SELECT version, sha FROM versions WHERE job=?", (self.id,)
                ).fetchall()
                freed = {str(r["sha"]) for r in rows if int(r["version"]) not in keep}
                for r in rows:
                    if int(r["version"]) not in keep:
                        db.execute(
                            "DELETE FROM versions WHERE job=? AND version=?",
                            (self.id, r["version"]),
                        )
        except BaseException:
            self.load()
            raise
        self.store.delete_blobs(freed)


def make_job(job_id: str, store: Store, blueprint: Blueprint) -> Job:
    return (
        RoundsJob(job_id, store, blueprint)
        if blueprint.settings.kind == "rounds"
        else AsyncJob(job_id, store, blueprint)
    )

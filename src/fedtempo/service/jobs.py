"""A job on the wall clock: the second driver of ``fedtempo.algorithms``' objects.

``RoundsJob`` (``service.rounds``) drives a ``RoundAlgorithm`` (FedAvg/FedProx): a round
starts when enough parties ask for work, its cohort is sampled among them, and it closes when
every cohort member has uploaded, or at its absolute deadline with at least ``quorum`` updates
(else it fails and a new one starts). ``AsyncJob`` (``service.asyncjob``) drives an
``AsyncAlgorithm`` (FedAsync, FedBuff, AsyncFedED): up to ``concurrency`` parties train at
once and every upload is folded in at once, the next task (with its local epochs) returned
with the answer.

Every change is persisted in the same transaction as the ledger rows that describe it; the
in-memory state is rebuilt from the store at start (and after a failed commit), so that what
the job holds is always what the disk holds. Nothing here is a second copy of an aggregation
rule: the algorithm objects do all of the maths. This module holds what both kinds share.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import torch

from fedtempo.aggregation.sync import SyncRule
from fedtempo.algorithms.asynchronous import AsyncAlgorithm
from fedtempo.algorithms.protocol import ModelState, RoundAlgorithm
from fedtempo.client.local import Update
from fedtempo.service import wire
from fedtempo.service.store import Store, failpoint

T = TypeVar("T")
POLL_FRESH_S = 60.0  # a party that asked for work this recently counts as waiting (online)
IDLE_FRESH_S = 35.0  # an idle party is dispatched to only if it asked this recently
MAX_COUNT = 2**62  # the largest count or version a request may name (SQLite's are 64-bit)


@dataclass(frozen=True)
class JobSettings:
    """How the service drives a job (wall seconds). ``clients_per_round`` None: every enrolled
    party with data; ``quorum``: updates a round needs at its deadline (with
    ``close_at_quorum``: the updates that close it at once); ``gather_s``: how long a round
    waits for more parties once ``quorum`` of them ask."""

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
    close_at_quorum: bool = False


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
    rule: SyncRule | None = None  # a rounds job's rule, fused by the aggregator workers


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
        if max(env.base_version, env.samples, env.steps) > MAX_COUNT:
            raise Rejected(
                422,
                f"update metadata: base_version, samples, steps above {MAX_COUNT}",
                "bad metadata",
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


class Job:
    """What both kinds of job share: identity, parties, versions, rejection counts."""

    def __init__(self, job_id: str, store: Store, blueprint: Blueprint) -> None:
        self.id, self.store, self.bp = job_id, store, blueprint
        self.s = blueprint.settings
        self.waiting: dict[int, float] = {}  # party id -> when it asked for work, idle
        self.seen: dict[int, float] = {}  # party id -> its last request (online if recent)
        self.load()

    # ---- durable state ----------------------------------------------------------------------

    def row(self, columns: str = "*") -> Any:
        """The job's row, or some ``columns`` of it (the hot paths skip the spec's text)."""
        query = f"SELECT {columns} FROM jobs WHERE id=?"
        return self.store.db.execute(query, (self.id,)).fetchone()

    @property
    def status(self) -> str:
        return str(self.row("status")[0])

    def load(self) -> None:
        """(Re)build the in-memory state from the store."""
        raise NotImplementedError

    def vector(self, version: int) -> torch.Tensor:
        return wire.parse(self.bp.layout, self.version_blob(version))[0]

    def version_sha(self, version: int) -> str:
        row = self.store.db.execute(
            "SELECT sha FROM versions WHERE job=? AND version=?", (self.id, version)
        ).fetchone()
        if row is None:
            raise Rejected(404, f"version {version} is not kept (no party holds it)")
        return str(row["sha"])

    def version_blob(self, version: int) -> bytes:
        return self.store.get_blob(self.version_sha(version))

    def stored_update(self, row: Any) -> Update:
        """The update an ``updates`` row describes, its delta read back from its blob."""
        vector = wire.parse(self.bp.layout, self.store.get_blob(row["sha"]))[0]
        return Update(
            int(row["party"]),
            0,
            int(row["base_version"]),
            vector,
            int(row["samples"]),
            int(row["steps"]),
            float(row["loss"]),
        )

    def current_version(self) -> int:
        return int(self.row("version")[0])

    def publish_sha(self, version: int, sha: str, keep: set[int]) -> set[str]:
        """Inside a transaction: make the model stored as ``sha`` the current ``version`` and
        drop the versions outside ``keep``; returns the blobs that became unreferenced."""
        db = self.store.db
        db.execute("INSERT OR REPLACE INTO versions VALUES (?,?,?)", (self.id, version, sha))
        db.execute("UPDATE jobs SET version=? WHERE id=?", (version, self.id))
        return self.drop_versions(keep | {version})

    def drop_versions(self, keep: set[int]) -> set[str]:
        """Inside a transaction: forget the versions outside ``keep``; their blobs."""
        db = self.store.db
        old = db.execute("SELECT version, sha FROM versions WHERE job=?", (self.id,)).fetchall()
        freed = set()
        for r in old:
            if r["version"] not in keep:
                db.execute(
                    "DELETE FROM versions WHERE job=? AND version=?", (self.id, r["version"])
                )
                freed.add(str(r["sha"]))
        return freed

    def to_wake(self, waiting: list[int]) -> list[int]:
        """Which of the long-polling ``waiting`` parties a change may concern: all of them
        (a rounds job; an asynchronous job narrows it)."""
        return waiting

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

    def _finish_job(self, reason: str, now: float) -> None:
        self.store.db.execute(
            "UPDATE jobs SET status='done', done_reason=?, finished=? WHERE id=?",
            (reason, now, self.id),
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
        prior = self.prior_answer(party, key)
        if prior is not None:
            return prior
        env, update, sha = self.validated(party, body)

        def applied() -> tuple[dict[str, Any], set[str]]:
            answer, freed = self.apply(party, key, env, update, sha, now)
            self.store_answer(party, key, answer)
            return answer, freed

        return self.committed(applied)

    def prior_answer(self, party: int, key: str) -> dict[str, Any] | None:
        """The stored answer to the party's upload ``key``, marked as a duplicate."""
        prior = self.store.db.execute(
            "SELECT response FROM updates WHERE job=? AND party=? AND key=?",
            (self.id, party, key),
        ).fetchone()
        return None if prior is None else {**json.loads(prior["response"]), "duplicate": True}

    def validated(self, party: int, body: bytes) -> tuple[Envelope, Update, str]:
        """The upload parsed and admitted, its blob stored (or Rejected, nothing changed)."""
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
        return env, update, sha

    def committed(self, work: Callable[[], tuple[T, set[str]]]) -> T:
        """``work`` in one transaction (it returns its result and the blobs it freed); the
        result once it is on disk, the freed blobs removed after the commit."""
        try:
            with self.store.tx():
                result, freed = work()
        except BaseException:
            self.load()  # the disk is the truth: forget what the failed transaction did
            raise
        failpoint("before-ack")
        self.store.delete_blobs(freed)
        return result

    def store_answer(self, party: int, key: str, answer: dict[str, Any]) -> None:
        """Inside a transaction: the answer a retry of the party's upload ``key`` gets."""
        self.store.db.execute(
            "UPDATE updates SET response=? WHERE job=? AND party=? AND key=?",
            (json.dumps(answer), self.id, party, key),
        )

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

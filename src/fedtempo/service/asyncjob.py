"""An ``AsyncAlgorithm`` (FedAsync, FedBuff, AsyncFedED) on the wall clock.

Up to ``concurrency`` parties train at once. An upload is checked here and its blob stored; it
then waits (``Pending``) for the job's aggregator worker (``service.asyncserve``), which applies
the job's updates in arrival order, in batches of what waits, with the job's own
``AsyncAlgorithm``, on a state it rebuilds from the ledger (current version, the updates' base
versions, FedBuff's buffer, the parties' K). ``settle`` then commits the batch, each update with
its outcome, answer and the party's next task, in one transaction, and only then are the
parties answered. This process holds no model and never applies an update.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import torch

from fedtempo.algorithms.asynchronous import AsyncAlgorithm
from fedtempo.client.local import Update
from fedtempo.rng import Streams
from fedtempo.service.jobs import (
    IDLE_FRESH_S,
    Envelope,
    Job,
    Rejected,
)


def _described(row: Any) -> dict[str, Any]:
    """A buffered ``updates`` row as the worker reads it."""
    return {
        "sha": row["sha"],
        "party": int(row["party"]),
        "base_version": int(row["base_version"]),
        "samples": int(row["samples"]),
        "steps": int(row["steps"]),
        "loss": float(row["loss"]),
        "weight": float(row["weight"]),
    }


@dataclass
class Pending:
    """A validated upload (its blob stored) waiting for the job's worker; ``done`` gets the
    answer, or the Rejected the worker's turn found."""

    party: int
    key: str
    env: Envelope
    sha: str
    received: float
    done: asyncio.Future[dict[str, Any]]
    started: bool = False  # the worker has it (it will be committed or fail)
    cancelled: bool = False  # the party was told to retry before it started: skip it

    def describe(self) -> dict[str, Any]:
        return {
            "sha": self.sha,
            "party": self.party,
            "base_version": self.env.base_version,
            "samples": self.env.samples,
            "steps": self.env.steps,
            "loss": self.env.loss,
        }


class AsyncJob(Job):
    """An ``AsyncAlgorithm`` on the wall clock: up to ``concurrency`` parties train at once."""

    @property
    def alg(self) -> AsyncAlgorithm:
        assert self.bp.asynchronous is not None
        return self.bp.asynchronous

    def load(self) -> None:
        """Nothing to rebuild: the ledger is the whole state."""

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
        if not self._slot_free():
            self.waiting[party] = now  # no transaction for a party that keeps waiting
            return None
        with self.store.tx():
            task = self._start(party, now)
        if task is None:
            self.waiting[party] = now
        else:
            self.waiting.pop(party, None)
        return task

    def _next_after_upload(self, party: int, now: float) -> dict[str, Any] | None:
        """Inside the settling transaction: the freed slot goes, as in the simulator, to a
        random idle party among those asking for work and the uploader (the stream
        ("service-dispatch", n) for the n-th update); the uploader's next task, if it won."""
        if self.status != "running":
            return {"done": True}
        idle = {p for p, t in self.waiting.items() if now - t <= IDLE_FRESH_S and p != party}
        candidates = sorted(idle | {party})
        chosen = party
        if len(candidates) > 1:
            n = int(self.row("received")[0])
            rng = Streams(self.s.seed).numpy("service-dispatch", n)
            chosen = candidates[int(rng.integers(len(candidates)))]
        task = self._start(chosen, now)
        if chosen != party:
            if task is not None:
                self.waiting.pop(chosen, None)  # its long-poll finds the task
            return None
        return task

    def to_wake(self, waiting: list[int]) -> list[int]:
        """The waiting parties that hold a task now (a freed slot went to one of them), and as
        many of the longest-waiting others as slots are free; all once the job is over."""
        if self.status != "running":
            return waiting
        rows = self.store.db.execute(
            "SELECT party FROM tasks WHERE job=? AND open=1", (self.id,)
        ).fetchall()
        holding = {int(r[0]) for r in rows}
        free = max(0, self.s.concurrency - len(holding))
        others = sorted(
            (p for p in waiting if p not in holding), key=lambda p: self.waiting.get(p, 0.0)
        )
        return [p for p in waiting if p in holding] + others[:free]

    def _slot_free(self) -> bool:
        training = self.store.db.execute(
            "SELECT COUNT(*) FROM tasks WHERE job=? AND open=1", (self.id,)
        ).fetchone()[0]
        return int(training) < self.s.concurrency

    def _start(self, party: int, now: float) -> dict[str, Any] | None:
        """Inside a transaction: a new task for ``party`` from the current version, if a
        training slot is free."""
        db = self.store.db
        if not self._slot_free() or self._open_task(party) is not None:
            return None
        row = db.execute(
            "SELECT dispatches, next_epochs FROM parties WHERE job=? AND id=?", (self.id, party)
        ).fetchone()
        dispatch = int(row["dispatches"])
        stored = row["next_epochs"]
        epochs = self.alg.epochs_for(None if stored is None else int(stored))
        base = self.current_version()
        task_id = f"a{dispatch}-p{party}"
        db.execute(
            "INSERT INTO tasks VALUES (?,?,?,?,?,?,NULL,?,1)",
            (self.id, task_id, party, base, dispatch, epochs, now),
        )
        db.execute(
            "UPDATE parties SET dispatches = dispatches + 1, next_epochs=? WHERE job=? AND id=?",
            (epochs, self.id, party),
        )
        return {
            "task": task_id,
            "round": None,
            "base_version": base,
            "dispatch": dispatch,
            "epochs": epochs,
            "deadline": None,
        }

    def _task_of(self, party: int, env: Envelope) -> Any:
        """The open task ``env`` answers, or Rejected (late: expired or answered)."""
        t = self._open_task(party)
        if t is None or t["id"] != env.task:
            raise Rejected(409, f"late: task {env.task} is not open (expired or answered)", "late")
        return t

    def admit(self, party: int, env: Envelope, vector: torch.Tensor) -> Update:
        t = self._task_of(party, env)
        if env.base_version != int(t["base_version"]):
            raise Rejected(409, f"unknown base version {env.base_version}", "unknown base version")
        update = Update(party, 0, env.base_version, vector, env.samples, env.steps, env.loss)
        known = self.store.db.execute(
            "SELECT 1 FROM versions WHERE job=? AND version=?", (self.id, env.base_version)
        ).fetchone()
        reason = self.alg.rule.problem(update, known is not None, self.bp.initial)
        if reason:
            raise Rejected(422, reason)
        return update

    def prepare(
        self, party: int, key: str, body: bytes, now: float, loop: asyncio.AbstractEventLoop
    ) -> Pending | dict[str, Any]:
        """The upload checked and its blob stored, waiting for the worker (or the answer to
        an earlier upload of the same key)."""
        prior = self.prior_answer(party, key)
        if prior is not None:
            return prior
        env, _, sha = self.validated(party, body)  # the worker reads the delta from the blob
        return Pending(party, key, env, sha, now, loop.create_future())

    def recheck(self, p: Pending) -> dict[str, Any] | None:
        """At the worker's turn: the answer already given to the same key, or None if the
        update is still to be applied (Rejected: the job ended, or the task went meanwhile)."""
        prior = self.prior_answer(p.party, p.key)
        if prior is not None:
            return prior
        if self.status != "running":
            raise Rejected(409, f"job {self.id} is {self.status}")
        self._task_of(p.party, p.env)
        return None

    # ---- what the aggregator worker does ----------------------------------------------------

    def command(self, batch: list[Pending]) -> dict[str, Any]:
        """The worker's ``apply_async`` command for pending updates (in arrival order):
        everything the rule reads, by blob sha (the ledger's current version, the updates'
        bases, the buffer, the parties' K)."""
        db = self.store.db
        current = self.current_version()
        buffer = db.execute(
            "SELECT * FROM updates WHERE job=? AND status='buffered' ORDER BY seq", (self.id,)
        ).fetchall()
        epochs = {}
        for p in batch:
            k = db.execute(
                "SELECT next_epochs FROM parties WHERE job=? AND id=?", (self.id, p.party)
            ).fetchone()[0]
            if k is not None:
                epochs[str(p.party)] = int(k)
        bases = {p.env.base_version for p in batch}
        return {
            "op": "apply_async",
            "current": [current, self.version_sha(current)],
            "versions": {str(v): self.version_sha(v) for v in sorted(bases)},
            "updates": [p.describe() for p in batch],
            "buffer": [_described(b) for b in buffer],
            "epochs": epochs,
        }

    def issued(self, p: Pending) -> float | None:
        """When the task a pending update answers was handed out."""
        t = self.store.db.execute(
            "SELECT issued FROM tasks WHERE job=? AND id=?", (self.id, p.env.task)
        ).fetchone()
        return None if t is None else float(t[0])

    def settle(
        self, batch: list[Pending], results: list[dict[str, Any]], now: float
    ) -> list[dict[str, Any] | None]:
        """Commit the updates with what the worker computed for each (its status and weight,
        the new version if one was made, the party's K), their answers and the parties' next
        tasks, in one transaction (one fsync for the lot). Returns the answers (on disk); None
        for an update that came after the job ended (``max_updates`` reached in the batch)."""

        def applied() -> tuple[list[dict[str, Any] | None], set[str]]:
            answers: list[dict[str, Any] | None] = []
            freed: set[str] = set()
            for p, result in zip(batch, results, strict=True):
                if self.status != "running":
                    answers.append(None)
                    freed |= {p.sha} | ({result["sha"]} if result.get("sha") else set())
                    continue
                answer, gone = self._apply_result(result, p, now)
                self.store_answer(p.party, p.key, answer)
                answers.append(answer)
                freed |= gone
            return answers, freed

        return self.committed(applied)

    def _apply_result(
        self, result: dict[str, Any], p: Pending, now: float
    ) -> tuple[dict[str, Any], set[str]]:
        db = self.store.db
        party, key, env, sha = p.party, p.key, p.env, p.sha
        version = result.get("version")
        freed: set[str] = set()
        if version is not None:  # flushed: every buffered update is now applied
            rows = db.execute(
                "SELECT sha FROM updates WHERE job=? AND status='buffered'", (self.id,)
            ).fetchall()
            freed |= {str(x[0]) for x in rows} | {sha}
            db.execute(
                "UPDATE updates SET status='applied' WHERE job=? AND status='buffered'", (self.id,)
            )
        status = "buffered" if version is None else "applied"
        self.insert_update(party, key, env, sha, p.received, status, None, float(result["weight"]))
        db.execute("DELETE FROM tasks WHERE job=? AND id=?", (self.id, env.task))
        k_next = int(result["k_next"])
        if self.alg.epochs is not None:
            db.execute(
                "UPDATE parties SET next_epochs=? WHERE job=? AND id=?", (k_next, self.id, party)
            )
        db.execute(
            "UPDATE jobs SET accepted = accepted + 1, received = received + 1 WHERE id=?",
            (self.id,),
        )
        if version is not None:
            freed |= self.publish_sha(int(version), str(result["sha"]), self._referenced())
        received = int(self.row("received")[0])
        if self.s.max_updates is not None and received >= self.s.max_updates:
            self._finish_job(f"{self.s.max_updates} updates received", now)
        answer = {
            "status": status,
            "version": version,
            "weight": result["weight"],
            "staleness": result["versions"],
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
        """Tasks not answered within ``task_timeout_s`` are given up."""
        db = self.store.db
        stale = db.execute(
            "SELECT id FROM tasks WHERE job=? AND open=1 AND issued < ?",
            (self.id, now - self.s.task_timeout_s),
        ).fetchall()
        if not stale:
            return
        with self.store.tx():
            for t in stale:
                db.execute("DELETE FROM tasks WHERE job=? AND id=?", (self.id, t["id"]))
            freed = self.drop_versions(self._referenced() | {self.current_version()})
        self.store.delete_blobs(freed)

"""An ``AsyncAlgorithm`` (FedAsync, FedBuff, AsyncFedED) on the wall clock."""

from __future__ import annotations

from typing import Any

import torch

from fedtempo.aggregation.versions import VersionStore
from fedtempo.algorithms.asynchronous import AsyncAlgorithm, AsyncRunState
from fedtempo.client.local import Update
from fedtempo.rng import Streams
from fedtempo.service.jobs import (
    IDLE_FRESH_S,
    Envelope,
    Job,
    Rejected,
)


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
            state.rule.buffer.append((self.stored_update(u), float(u["weight"])))
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
        if not self._slot_free():  # no transaction for a party that keeps waiting
            self.waiting[party] = now
            return None
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

    def _slot_free(self) -> bool:
        training = self.store.db.execute(
            "SELECT COUNT(*) FROM tasks WHERE job=? AND open=1", (self.id,)
        ).fetchone()[0]
        return int(training) < self.s.concurrency

    def _start(self, party: int, now: float) -> dict[str, Any] | None:
        """Inside a transaction: a new task for ``party`` if a training slot is free."""
        db = self.store.db
        if not self._slot_free():
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
            self._finish_job(f"{self.s.max_updates} updates received", now)
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

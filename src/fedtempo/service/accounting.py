"""What aggregation cost and how late it was, per job and in total (SPEC C's measures).

- container-seconds: a worker's wall time from spawn to exit (to now while it runs);
- CPU-seconds: the worker process's user + system time, from the OS (as the worker last
  reported it; a worker killed mid-way keeps what it had reported);
- deploys, and the measured deploy time (spawn until ready);
- aggregation latency: a round's publish minus the arrival that closed it (an asynchronous
  job: an update's commit minus its arrival); round time: publish minus round start; job
  completion: finish minus creation;
- prediction error: JIT's A_hat minus the actual close, per round;
- eager-equivalent container-seconds: every job holding a worker from creation to end.

Worker lives are wall-clock times (the launcher's, whatever clock the service runs on); round
times are the service clock's. Both are in the ledger (``workers``, ``rounds``), so the figures
survive restarts; prediction errors, fallbacks, partial fusions and asynchronous latencies are
counted in memory.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from fedtempo.service.store import Store


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Accounting:
    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self.store, self.clock = store, clock
        self.counts: dict[str, dict[str, int]] = defaultdict(
            lambda: {"fallbacks": 0, "partial_fusions": 0, "fused": 0}
        )
        self.errors: dict[str, list[float]] = defaultdict(list)
        self.async_latency: dict[str, list[float]] = defaultdict(list)
        self._fused: dict[int, int] = {}
        # workers of a previous server process died with it (their stdin closed): they are
        # counted up to this start, an upper bound of when they went
        if store.db.execute("SELECT 1 FROM workers WHERE exited IS NULL").fetchone():
            with store.tx() as db:
                db.execute(
                    "UPDATE workers SET exited=?, outcome='ended with the server' "
                    "WHERE exited IS NULL",
                    (time.time(),),
                )

    # ---- events -----------------------------------------------------------------------------

    def started(self, job: str, policy: str, worker: Any) -> int:
        with self.store.tx() as db:
            cur = db.execute(
                "INSERT INTO workers (job, policy, spawned, ready) VALUES (?,?,?,?)",
                (job, policy, worker.spawned, worker.ready),
            )
        wid = int(cur.lastrowid or 0)
        self._fused[wid] = 0
        return wid

    def exited(self, wid: int, worker: Any, now: float, outcome: str) -> None:
        with self.store.tx() as db:
            db.execute(
                "UPDATE workers SET exited=?, cpu_s=?, fused=?, outcome=? WHERE id=?",
                (now, float(worker.cpu_s), self._fused.pop(wid, 0), outcome[:200], wid),
            )

    def fused(self, job: str, wid: int) -> None:
        """Worker ``wid`` (as ``started`` numbered it) fused one of ``job``'s updates."""
        self.counts[job]["fused"] += 1
        self._fused[wid] = self._fused.get(wid, 0) + 1

    def fallback(self, job: str) -> None:
        self.counts[job]["fallbacks"] += 1

    def partial(self, job: str) -> None:
        self.counts[job]["partial_fusions"] += 1

    def applied(self, job: str, latency_s: float) -> None:
        """An asynchronous update was committed ``latency_s`` after it arrived."""
        self.async_latency[job].append(latency_s)

    def prediction(self, job: str, error_s: float) -> None:
        self.errors[job].append(error_s)

    # ---- figures ----------------------------------------------------------------------------

    def workers(self, job: str | None = None) -> list[dict[str, Any]]:
        """Every worker's life (the pool over time), oldest first."""
        sql = "SELECT * FROM workers" + (" WHERE job=?" if job else "") + " ORDER BY id"
        rows = self.store.db.execute(sql, (job,) if job else ()).fetchall()
        return [
            {
                "id": int(r["id"]),
                "job": r["job"],
                "policy": r["policy"],
                "spawned": float(r["spawned"]),
                "ready": r["ready"],
                "exited": r["exited"],
                "cpu_s": float(r["cpu_s"]),
                "fused": int(r["fused"]),
                "outcome": r["outcome"],
            }
            for r in rows
        ]

    def job(self, job: str) -> dict[str, Any]:
        now, wall = self.clock(), time.time()
        lives = self.workers(job)
        container = sum((w["exited"] or wall) - w["spawned"] for w in lives)
        deploys = [w["ready"] - w["spawned"] for w in lives if w["ready"] is not None]
        rounds = self.store.db.execute(
            "SELECT started, closing_at, published FROM rounds WHERE job=? AND "
            "published IS NOT NULL ORDER BY number",
            (job,),
        ).fetchall()
        latency = [float(r["published"] - r["closing_at"]) for r in rounds]
        latency += self.async_latency.get(job, [])
        round_s = [float(r["published"] - r["started"]) for r in rounds]
        row = self.store.db.execute(
            "SELECT created, finished FROM jobs WHERE id=?", (job,)
        ).fetchone()
        end = row["finished"] if row["finished"] is not None else now
        errors = self.errors.get(job, [])
        return {
            "container_s": container,
            "cpu_s": sum(w["cpu_s"] for w in lives),
            "deploys": len(lives),
            "deploy_s_median": statistics.median(deploys) if deploys else None,
            "live_workers": sum(1 for w in lives if w["exited"] is None),
            "latency_s_median": statistics.median(latency) if latency else None,
            "latency_s_p95": _quantile(latency, 0.95),
            "round_s_median": statistics.median(round_s) if round_s else None,
            "completion_s": (end - row["created"]) if row["finished"] is not None else None,
            "eager_equivalent_s": end - row["created"],
            "prediction_error_s_median": statistics.median(errors) if errors else None,
            **self.counts[job],
        }

    def totals(self, jobs: list[str]) -> dict[str, Any]:
        per = [self.job(j) for j in jobs]
        keys = ("container_s", "cpu_s", "deploys", "eager_equivalent_s", "live_workers")
        total = {k: sum(p[k] for p in per) for k in keys}
        eager = total["eager_equivalent_s"]
        total["saved_share"] = 1 - total["container_s"] / eager if eager > 0 else None
        return total

"""W-chaos's kill part: parties uploading through a faulty loopback proxy to a real server that
is SIGKILLed again and again (at random moments and at each failpoint), its aggregator workers
killed too; afterwards the verdict from the state directory alone (tests/chaos/harness.py)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from tests.chaos.harness import FaultyProxy, Recorder, chaos_job, kill_a_worker, stream, verdict
from tests.service.live import Server

from fedtempo.service import auth

RATES = {"pass": 6.0, "delay": 1.0, "drop": 1.0, "truncate": 1.0, "reset": 1.0}
SERVER_POINTS = ("after-blob-write", "before-commit", "before-ack")
MODES = ("random", *SERVER_POINTS, "mid-fusion", "random")


def _workers_died(state: Path) -> int:
    db = sqlite3.connect(f"file:{state / 'ledger.sqlite'}?mode=ro", uri=True, timeout=5)
    try:
        return int(
            db.execute("SELECT COUNT(*) FROM workers WHERE outcome LIKE 'died%'").fetchone()[0]
        )
    except sqlite3.Error:
        return -1
    finally:
        db.close()


def _wait(cond: Any, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def kill_study(root: Path, kills: int, seed: int, parties: int = 3) -> dict[str, Any]:
    srv = Server(root / "state")
    srv.start()
    proxy = FaultyProxy(srv.port, RATES, seed, delay_s=0.05)
    job, ps = chaos_job(srv.url, srv.token, parties, party_url=proxy.start(), give_up_s=900.0)
    rec, stop, errors = Recorder(), threading.Event(), []
    t = threading.Thread(target=stream, args=(ps, rec, stop, errors))
    t.start()
    rng = np.random.default_rng(seed)
    by_mode: Counter[str] = Counter()
    worker_kills = stalls = 0
    began = time.monotonic()
    try:
        srv.kill()
        for i in range(kills):
            mode = MODES[i % len(MODES)]
            try:
                srv.start(failpoint=None if mode == "random" else mode)
            except RuntimeError:  # it died at its failpoint while recovering (before-commit)
                by_mode[f"{mode} (while starting)"] += 1
                continue
            assert srv.proc is not None
            seen = len(rec.acked)
            if mode in SERVER_POINTS:
                try:
                    srv.wait_dead(60)
                    by_mode[mode] += 1
                    continue
                except Exception:  # the failpoint was not reached in time: a random kill
                    mode = "random (failpoint not reached)"
            elif mode == "mid-fusion":
                died = _workers_died(srv.state)
                _wait(lambda died=died: _workers_died(srv.state) > died, 15.0)
            else:
                if not _wait(lambda seen=seen: len(rec.acked) > seen, 60.0):
                    stalls += 1
                if rng.random() < 0.5:
                    worker_kills += kill_a_worker(srv.proc.pid, rng)
                time.sleep(float(rng.uniform(0.0, 1.0)))
            srv.kill()
            by_mode[mode] += 1
        srv.start()  # the job goes on after the last kill
        seen = len(rec.acked)
        continued = _wait(lambda: len(rec.acked) >= seen + 6, 120.0)
    finally:
        stop.set()
        t.join(300)
        proxy.stop()
        srv.kill()
    srv.start()  # a clean start collects what the last kill left half-written
    srv.kill()
    log = srv.log.read_text()
    leaked = [s for s in [srv.token, *(auth.b64(p.cred.private_key) for p in ps)] if s in log]
    return {
        "kills": sum(by_mode.values()),
        "kills_by_mode": dict(by_mode),
        "worker_kills": worker_kills,
        "worker_deaths_mid_fusion": max(0, _workers_died(srv.state)),
        "stalls": stalls,
        "continued": continued,
        "party_errors": [repr(e) for e in errors],
        "party_retries": sum(p.http.retries for p in ps),
        "proxy_faults": dict(proxy.counts),
        "refused": dict(rec.refused),
        "verdict": verdict(srv.state, job, rec),
        "secrets_in_log": len(leaked),
        "minutes": (time.monotonic() - began) / 60,
    }

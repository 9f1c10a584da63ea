"""Faults between the parties and the server (a loopback proxy that delays, drops, truncates and
resets connections), aggregator workers and the server SIGKILLed: nothing acknowledged is lost,
nothing is applied twice, the model equals its recomputation (SERVICE.md promises 1 and 3)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.chaos.harness import (
    FaultyProxy,
    Recorder,
    bad_figures,
    chaos_job,
    kill_a_worker,
    stream,
    verdict,
)
from tests.service.live import Server

pytestmark = pytest.mark.slow


def _wait_acks(rec: Recorder, more: int, timeout: float = 60.0) -> None:
    goal, end = len(rec.acked) + more, time.monotonic() + timeout
    while len(rec.acked) < goal:
        assert time.monotonic() < end, f"no progress: {len(rec.acked)} acks, wanted {goal}"
        time.sleep(0.05)


def test_a_faulty_network_and_killed_workers_and_servers_lose_nothing(tmp_path: Path) -> None:
    srv = Server(tmp_path / "state")
    srv.start()
    rates = {"pass": 4.0, "delay": 1.0, "drop": 1.0, "truncate": 1.0, "reset": 1.0}
    proxy = FaultyProxy(srv.port, rates, seed=0, delay_s=0.05)
    job, parties = chaos_job(srv.url, srv.token, 3, party_url=proxy.start())
    rec, stop, errors = Recorder(), threading.Event(), []
    t = threading.Thread(target=stream, args=(parties, rec, stop, errors))
    t.start()
    rng = np.random.default_rng(1)
    worker_kills = 0
    try:
        for _ in range(2):
            _wait_acks(rec, 3)
            end = time.monotonic() + 10
            while worker_kills < 2 * (_ + 1) and time.monotonic() < end:
                assert srv.proc is not None
                worker_kills += kill_a_worker(srv.proc.pid, rng)
                time.sleep(0.05)
            _wait_acks(rec, 3)
            srv.kill()
            srv.start()
        _wait_acks(rec, 3)  # the job goes on after the last restart
    finally:
        stop.set()
        t.join(120)
        proxy.stop()
        srv.kill()
    assert not errors, errors
    srv.start()  # a clean start collects what the last kill left half-written
    srv.kill()
    v = verdict(srv.state, job, rec)
    assert bad_figures(v) == {}, v
    assert v["acked"] >= 9 and worker_kills == 4
    assert all(proxy.counts[f] > 0 for f in ("delay", "drop", "truncate", "reset")), proxy.counts

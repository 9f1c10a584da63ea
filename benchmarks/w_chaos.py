"""W-chaos (BENCHMARKS.md): the service under faults, bad input, attack and load.

- kills: parties upload through a loopback proxy that delays, drops, truncates and resets
  connections, to a real ``fedtempo serve`` that is SIGKILLed ``--kills`` times, cycling
  through a random moment and each failpoint (after-blob-write, before-commit, before-ack, and
  the workers' mid-fusion), its aggregator workers killed at random too. Then, from the state
  directory alone: acknowledged updates lost, updates stored twice, the model against its
  recomputation from every recorded delta, integrity_check, missing/truncated/orphan blobs; and
  whether the job goes on. The log is searched for every credential.
- disk: the state directory on a 32 MB tmpfs that fills up, then is made read-only (root only).
- fuzz: ``--fuzz`` Hypothesis-generated broken safetensors payloads and envelopes, signed, at a
  real server's upload route (each refusal checked to change nothing), and schemathesis at
  every operation of the OpenAPI schema in process (``--schemathesis`` cases each), and its
  stateful sequences (``--sequences`` chains of calls, each on a fresh service).
- security: the negatives of SERVICE.md at every route (tests/chaos/negatives.py), ``--rounds``
  times, with a positive control of each.
- load: ``--parties`` asyncio parties (a client each) long-polling and uploading for
  ``--load-s`` seconds: upload p50/p99, errors, the server's memory and descriptors over time.

    python benchmarks/w_chaos.py [--quick] [--only kills,disk,fuzz,security,load]

With --only, the sections run are merged into the existing results file
(benchmarks/results/w_chaos.json), so sections can run in separate invocations.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the harness lives with the tests (tests/chaos)

from common import RESULTS, report  # noqa: E402

SECTIONS = ("security", "fuzz", "disk", "kills", "load")


def _fuzz_worker(url: str, token: str, state: str, n: int, seed: int) -> dict[str, Any]:
    import httpx
    from tests.chaos.fuzz import Tally, Target, fuzz_uploads

    with httpx.Client(base_url=url, timeout=30.0) as client:
        t = fuzz_uploads(Target(client, token, Path(state)), n, Tally(), seed)
    return t.__dict__


def fuzz(root: Path, n: int, per_op: int, seqs: int, procs: int, seed: int) -> dict[str, Any]:
    from chaos_load import _proc
    from tests.chaos.fuzz import Tally, Target, schemathesis_run, schemathesis_stateful
    from tests.service.helpers import InProcess
    from tests.service.live import Server

    # one server per fuzzing process: a refusal is checked to change nothing in its server's
    # state directory, which another process's accepted uploads would change
    servers = [Server(root / f"fuzz-state-{i}") for i in range(procs)]
    for srv in servers:
        srv.start()
    pids = [srv.proc.pid for srv in servers if srv.proc is not None]
    rss0 = sum(_proc(pid)[0] for pid in pids)
    began = time.monotonic()
    samples: list[tuple[float, float]] = []  # (s since start, servers' RSS MB), every 10 s
    done = threading.Event()

    def sample() -> None:
        while not done.wait(10.0):
            samples.append((time.monotonic() - began, sum(_proc(pid)[0] for pid in pids)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        share = [n // procs + (i < n % procs) for i in range(procs)]
        jobs = [
            (srv.url, srv.token, str(srv.state), k, seed + i)
            for i, (srv, k) in enumerate(zip(servers, share, strict=True))
        ]
        with ProcessPoolExecutor(procs, mp_context=get_context("spawn")) as pool:
            parts = list(pool.map(_fuzz_worker, *zip(*jobs, strict=True)))
        rss1 = sum(_proc(pid)[0] for pid in pids)
        fds = max(_proc(pid)[1] for pid in pids)
        health = all(srv.proc is not None and srv.proc.poll() is None for srv in servers)
    finally:
        done.set()
        sampler.join()
        for srv in servers:
            srv.kill()
    upload_s = time.monotonic() - began
    svc = InProcess(root / "schema-state")
    try:
        target = Target(svc.client, svc.token, svc.service.store.root)
        st = schemathesis_run(svc, target, per_op, Tally(), seed)
    finally:
        svc.close()
    chains = schemathesis_stateful(root / "sequences", seqs, Tally())
    tried = sum(p["tried"] for p in parts)
    statuses: dict[str, int] = {}
    for p in [*parts, st.__dict__, chains.__dict__]:
        for s, k in p["statuses"].items():
            statuses[str(s)] = statuses.get(str(s), 0) + k
    return {
        "uploads_tried": tried,
        "uploads_accepted": sum(p["accepted"] for p in parts),
        "upload_5xx": sum(p["server_errors"] for p in parts),
        "changed_on_refusal": sum(p["changed_on_refusal"] for p in parts),
        "hung": sum(p["hung"] for p in parts),
        "client_errors": sum(p["client_errors"] for p in parts),
        "slowest_s": max([p["slowest_s"] for p in parts] + [st.slowest_s]),
        "uploads_per_s": tried / upload_s,
        "schemathesis_tried": st.tried,
        "schemathesis_5xx": st.server_errors,
        "sequences": seqs,
        "sequence_calls_tried": chains.tried,
        "sequence_5xx": chains.server_errors,
        "statuses": statuses,
        "examples": [e for p in [*parts, st.__dict__, chains.__dict__] for e in p["examples"]][:10],
        "server_rss_mb_before": rss0,
        "server_rss_mb_after": rss1,
        "server_rss_mb_samples": samples,
        "server_rss_mb_max": max([rss0, rss1] + [m for _, m in samples]),
        "server_fds_after": fds,
        "server_alive": health,
    }


def security(root: Path, rounds: int) -> dict[str, Any]:
    from tests.chaos.negatives import run_matrix
    from tests.service.helpers import InProcess

    svc = InProcess(root / "security-state")
    try:
        m = run_matrix(svc, rounds)
    finally:
        svc.close()
    return {
        "tried": m.tried,
        "accepted": m.accepted,
        "routes": sorted(m.routes),
        "cases": sorted(m.cases),
        "controls_failed": m.controls_failed,
    }


def disk(root: Path) -> dict[str, Any]:
    from tests.chaos.disk import NoTmpfs, disk_run

    try:
        return disk_run(root)
    except NoTmpfs as exc:
        return {"skipped": str(exc)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--fuzz", type=int, default=100_000)
    ap.add_argument("--fuzz-procs", type=int, default=2)
    ap.add_argument("--schemathesis", type=int, default=1_000, help="cases per operation")
    ap.add_argument("--sequences", type=int, default=300, help="schemathesis stateful chains")
    ap.add_argument("--rounds", type=int, default=5, help="of the security matrix")
    ap.add_argument("--parties", type=int, default=500)
    ap.add_argument("--load-s", type=float, default=300.0)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--only", default=",".join(SECTIONS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.quick:
        # (the disk section is tests/chaos/test_disk.py's run: the suite has it already)
        a.kills, a.fuzz, a.fuzz_procs, a.schemathesis, a.rounds = 4, 200, 1, 5, 1
        a.sequences = 3
        a.parties, a.load_s, a.concurrency = 20, 5.0, 10
        a.only = a.only.replace("disk,", "") if a.only == ",".join(SECTIONS) else a.only
    only = [s for s in a.only.split(",") if s]
    if unknown := set(only) - set(SECTIONS):
        ap.error(f"--only: unknown sections {sorted(unknown)} (known: {', '.join(SECTIONS)})")
    path = RESULTS / ("w_chaos_quick.json" if a.quick else "w_chaos.json")
    sections: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="w-chaos-") as tmp:
        root = Path(tmp)
        for name in only:
            began = time.monotonic()
            print(f"== {name}", flush=True)
            if name == "kills":
                from chaos_kills import kill_study

                sections[name] = kill_study(root / name, a.kills, a.seed)
            elif name == "fuzz":
                sections[name] = fuzz(
                    root / name, a.fuzz, a.schemathesis, a.sequences, a.fuzz_procs, a.seed
                )
            elif name == "security":
                sections[name] = security(root / name, a.rounds)
            elif name == "disk":
                sections[name] = disk(root / name)
            else:
                from chaos_load import load_run

                sections[name] = load_run(root / name, a.parties, a.load_s, a.concurrency)
            sections[name]["section_s"] = time.monotonic() - began
            print(
                json.dumps(
                    {k: v for k, v in sections[name].items() if k != "rss_series"},
                    indent=1,
                    default=str,
                ),
                flush=True,
            )
    if len(only) < len(SECTIONS) and path.is_file():  # read now: another run may have written
        sections = json.loads(path.read_text()).get("sections", {}) | sections
    figures, targets = summarize(sections, a.quick)
    path = report("W-chaos", "W-chaos", figures, targets, a.quick)
    payload = json.loads(path.read_text())
    payload["sections"] = sections
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def summarize(
    sections: dict[str, Any], quick: bool
) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    figures: dict[str, float] = {}
    targets: dict[str, dict[str, Any]] = {}
    if k := sections.get("kills"):
        v = k["verdict"]
        figures |= {
            "server kills survived": k["kills"],
            "aggregator worker kills": k["worker_kills"] + k["worker_deaths_mid_fusion"],
            "acknowledged updates": v["acked"],
            "acknowledged updates lost": v["lost"],
            "updates applied twice": v["twice"] + v["version_off"],
            "aggregates differing from recomputation": v["model_mismatch"],
            "integrity_check failures": v["integrity_bad"],
            "blobs missing, truncated or orphan": v["blobs_missing"]
            + v["blobs_truncated"]
            + v["blobs_orphan"],
            "proxy faults injected": sum(n for f, n in k["proxy_faults"].items() if f != "pass"),
            "credentials in the server log": k["secrets_in_log"],
        }
        want = 4 if quick else 200
        targets[f"kills survived >= {want} with the job going on"] = {
            "value": k["kills"],
            "met": k["kills"] >= want and k["continued"] and not k["party_errors"],
        }
        targets["acknowledged updates lost = 0"] = {"value": v["lost"], "met": v["lost"] == 0}
        bad = v["twice"] + v["version_off"] + v["model_mismatch"] + v["integrity_bad"]
        bad += v["blobs_missing"] + v["blobs_truncated"] + v["blobs_orphan"] + v["unknown"]
        targets["applied twice, recomputation mismatches, integrity or blob faults = 0"] = {
            "value": bad,
            "met": bad == 0,
        }
    if f := sections.get("fuzz"):
        tried = f["uploads_tried"] + f["schemathesis_tried"] + f["sequence_calls_tried"]
        fives = f["upload_5xx"] + f["schemathesis_5xx"] + f["sequence_5xx"]
        figures |= {
            "malformed requests tried": tried,
            "5xx answers to them": fives,
            "refusals that changed state": f["changed_on_refusal"],
            "slowest malformed request (s)": f["slowest_s"],
            "requests that hung or broke the connection": f["hung"] + f["client_errors"],
            "servers' memory growth during fuzzing (MB, all)": f["server_rss_mb_after"]
            - f["server_rss_mb_before"],
            "servers' memory peak during fuzzing (MB, all)": f["server_rss_mb_max"],
        }
        want = 200 if quick else 100_000
        targets[f"malformed requests tried >= {want}, 0 answered 5xx, none changed state"] = {
            "value": tried,
            "met": tried >= want
            and fives == 0
            and f["hung"] + f["client_errors"] == 0
            and f["changed_on_refusal"] == 0
            and f["server_alive"],
        }
    if s := sections.get("security"):
        figures |= {
            "security negatives tried": s["tried"],
            "security negatives accepted": len(s["accepted"]),
        }
        targets["security negatives accepted = 0 (each route's control accepted)"] = {
            "value": len(s["accepted"]),
            "met": not s["accepted"] and not s["controls_failed"],
        }
    if (d := sections.get("disk")) and "skipped" not in d:
        ok = d["acked_while_full"] <= 1 and d["answer_while_full"][0] == 503 and d["recovered"]
        ok = ok and "Read-only" in d["read_only_start"] and d["tracebacks_in_log"] == 0
        lost = d["verdict"]["lost"]
        figures |= {"full disk: acknowledged updates lost": lost}
        targets["full / read-only disk: clear refusal, recovery, nothing lost"] = {
            "value": lost,
            "met": ok and lost == 0,
        }
    if ld := sections.get("load"):
        figures |= {
            "concurrent parties held": ld["parties"],
            "load: uploads per second": ld["uploads_per_s"],
            "load: upload p50 (ms)": ld["upload_p50_ms"],
            "load: upload p99 (ms)": ld["upload_p99_ms"],
            "load: errors": ld["errors"],
            "load: server memory growth (%)": ld["rss_growth_pct"],
            "load: server file descriptors (max)": ld["fds_max"],
        }
        targets["load: p99 < 500 ms, flat memory (< 5% growth), no errors"] = {
            "value": ld["upload_p99_ms"],
            "met": ld["upload_p99_ms"] < 500 and ld["rss_growth_pct"] < 5 and ld["errors"] == 0,
        }
    return figures, targets


if __name__ == "__main__":
    main()

"""W-live (BENCHMARKS.md): the service on loopback, durable acknowledgements.

(a) Throughput: one `fedtempo serve` process (SQLite synchronous=FULL, fsync'd blobs), 50
concurrent asyncio parties that skip training and upload precomputed cnn-s deltas (20,522
float32 parameters) to one FedBuff job for 60 s, each upload signed (Ed25519) and answered only
once durable. Figures: accepted updates per second, p50/p99 upload latency (request sent to 2xx),
server CPU-milliseconds per accepted update (from /proc), server peak memory.
(b) Fidelity: configs/default.toml (digits, 20 parties, FedAvg) and its AsyncFedED variant run
by `fedtempo emulate` against the service and by `fedtempo run` in the simulator: final accuracy
of each and their difference.

    python benchmarks/w_live.py [--seconds 60] [--parties 50] [--quick]

The load generator shares the 2 cores with the server, so the throughput is a lower bound of
what the server alone sustains. Results: benchmarks/results/w_live.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch
from common import report

from fedtempo.experiment.deploy import blueprint
from fedtempo.service import auth, wire
from fedtempo.service.client import Admin
from fedtempo.service.jobs import Envelope

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from fedtempo.cli import app; app()"]
SPEC = {
    "name": "w-live",
    "seed": 0,
    "model": {"name": "cnn-s"},
    "server": {
        "algorithm": "fedbuff",
        "concurrency": 1000,
        "max_updates": 10**9,
        "fedbuff": {"buffer_size": 10},
    },
    "input_shape": [1, 28, 28],
    "num_classes": 10,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, state: Path, args: tuple[str, ...] = ()) -> None:
        self.state, self.port = state, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        admin = state.parent / "admin.txt"
        state.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(state.parent / f"{state.name}-serve.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                *CLI,
                "serve",
                "--state",
                str(state),
                "--port",
                str(self.port),
                "--admin-file",
                str(admin),
                *args,
            ],
            stdout=self.log,
            stderr=self.log,
        )
        for _ in range(600):
            try:
                if httpx.get(self.url + "/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        self.token = admin.read_text().strip()

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()


class Conn:
    """A lean keep-alive HTTP/1.1 connection (the load generator must not need the cores the
    server is measured on): write a request, read status, headers and a Content-Length body."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Any:
        head = f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        self.writer.write(head.encode() + body)
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, json.loads(await self.reader.readexactly(length))


async def party(
    url: str,
    cred: auth.Credential,
    layout: wire.Layout,
    delta: torch.Tensor,
    until: float,
    latencies: list[float],
    errors: list[int],
) -> None:
    host, port = url.removeprefix("http://").split(":")
    conn = Conn(*await asyncio.open_connection(host, int(port)))
    base = f"/v1/jobs/{cred.job}"
    task: dict[str, Any] | None = None
    while time.monotonic() < until:
        if task is None:  # ask; afterwards the next task comes with each upload's answer
            body = json.dumps({"samples": 10, "wait_s": 2.0}).encode()
            h = cred.headers("POST", base + "/work", body, time.time())
            _, task = await conn.request(
                "POST", base + "/work", body, {**h, "content-type": "application/json"}
            )
        if not task or "task" not in task:
            task = None
            continue
        env = Envelope(task["task"], task["base_version"], 10, 1, 0.1)
        payload = wire.encode(layout, delta, env.to_meta())
        path = f"{base}/updates/{task['task']}"
        h = cred.headers("PUT", path, payload, time.time())
        sent = time.perf_counter()
        status, answer = await conn.request(
            "PUT", path, payload, {**h, "content-type": "application/octet-stream"}
        )
        if status == 200:
            latencies.append(time.perf_counter() - sent)
            task = answer.get("next")
        else:
            errors.append(status)
            task = None
    conn.writer.close()


async def load(srv: Server, job: str, creds: list[auth.Credential], seconds: float) -> Any:
    layout = blueprint(SPEC).layout
    gen = torch.Generator().manual_seed(0)
    deltas = [0.001 * torch.randn(layout.numel, generator=gen) for _ in creds]
    latencies: list[float] = []
    errors: list[int] = []
    until = time.monotonic() + seconds
    await asyncio.gather(
        *(
            party(srv.url, c, layout, d, until, latencies, errors)
            for c, d in zip(creds, deltas, strict=True)
        )
    )
    return latencies, errors


def throughput(seconds: float, parties: int, tmp: Path) -> dict[str, float]:
    srv = Server(tmp / "state-a")
    try:
        admin = Admin(srv.url, srv.token)
        job = admin.create_job("w-live", SPEC)
        creds = []
        for i in range(parties):
            key = auth.new_key()
            admin.enroll(job, f"p{i}", auth.b64(auth.public_key_bytes(key)))
            creds.append(auth.Credential(srv.url, job, f"p{i}", auth.private_bytes(key)))
        cpu0, t0 = srv.cpu_s(), time.monotonic()
        latencies, errors = asyncio.run(load(srv, job, creds, seconds))
        wall, cpu = time.monotonic() - t0, srv.cpu_s() - cpu0
        status = admin.status(job)
        peak = srv.peak_mb()
    finally:
        srv.stop()
    accepted = status["updates"]["accepted"]
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    return {
        "parties": parties,
        "accepted": accepted,
        "accepted_per_s": accepted / wall,
        "upload_p50_ms": 1000 * q[49],
        "upload_p99_ms": 1000 * q[98],
        "server_cpu_ms_per_update": 1000 * cpu / max(accepted, 1),
        "server_peak_mb": peak,
        "errors": len(errors),
        "versions": status["version"],
    }


TAIL = 0.2  # the share of the last model versions over which accuracy is averaged


def sim_tail(out: Path) -> float:
    """Mean test accuracy of the simulator's evaluations in the last TAIL of its versions."""
    import csv

    with open(out / "evaluations.csv", encoding="utf-8") as f:
        rows = [(int(r["version"]), float(r["accuracy"])) for r in csv.DictReader(f)]
    last = rows[-1][0]
    return statistics.fmean(a for v, a in rows if v >= (1 - TAIL) * last)


def fidelity(config: Path, tmp: Path, quick: bool) -> dict[str, float]:
    """The config's accuracy in the simulator and live (emulated parties): the final model's,
    and the mean over the last TAIL of the versions (the live model is sampled by the admin
    once a second while the parties run): single final points of an asynchronous run swing
    by several points with the last few updates."""
    import fedtempo
    from fedtempo.experiment.deploy import model_accuracy

    if quick:  # 3 parties, a short run
        small = tmp / f"{config.stem}-quick.toml"
        small.write_text(
            f'extends = "{config}"\nname = "q"\n[partition]\nnum_clients = 3\n'
            "[server]\nrounds = 2\nclients_per_round = 3\n"
        )
        config = small
    cfg = fedtempo.load_config(config)
    sim_out = tmp / f"sim-{config.stem}"
    sim = fedtempo.run(cfg, sim_out)
    accuracy = model_accuracy(cfg)
    srv = Server(tmp / f"state-{config.stem}")
    env = {**os.environ, "FEDTEMPO_SERVER": srv.url, "FEDTEMPO_ADMIN": srv.token}
    samples: dict[int, float] = {}
    try:
        made = subprocess.run(
            [*CLI, "job", "create", str(config)],
            env=env,
            text=True,
            capture_output=True,
            check=True,
        )
        job = made.stdout.strip().splitlines()[-1]
        admin = Admin(srv.url, srv.token)
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [
                *CLI,
                "emulate",
                str(config),
                "--job",
                job,
                "--time-scale",
                "0.02",
                "--creds",
                str(tmp / "creds"),
            ],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        while proc.poll() is None:
            blob, version = admin.model(job)
            if version not in samples:
                samples[version] = accuracy(blob)
            time.sleep(1.0)
        out = proc.stdout.read() if proc.stdout else ""
        wall = time.monotonic() - t0
        blob, version = admin.model(job)
        samples[version] = accuracy(blob)
    finally:
        srv.stop()
    found = re.search(r"test set: ([0-9.]+)", out)
    live = float(found.group(1)) if found else float("nan")
    last = max(samples)
    live_tail = statistics.fmean(a for v, a in samples.items() if v >= (1 - TAIL) * last)
    tail = sim_tail(sim_out)
    return {
        "sim_final": sim["final_accuracy"],
        "live_final": live,
        "final_diff_points": 100 * abs(live - sim["final_accuracy"]),
        "sim_tail": tail,
        "live_tail": live_tail,
        "tail_diff_points": 100 * abs(live_tail - tail),
        "live_wall_s": wall,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--parties", type=int, default=50)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    seconds, parties = (5.0, 10) if args.quick else (args.seconds, args.parties)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        a = throughput(seconds, parties, tmp)
        light = throughput(seconds / 3, max(parties // 5, 2), tmp / "light")
        configs = [ROOT / "configs" / "default.toml"]
        if not args.quick:
            configs.append(ROOT / "configs" / "default_asyncfeded.toml")
        b = {c.stem: fidelity(c, tmp, args.quick) for c in configs}
    figures: dict[str, float] = {f"a_{k}": float(v) for k, v in a.items()}
    figures |= {f"a_light_{k}": float(v) for k, v in light.items()}
    for name, f in b.items():
        figures |= {f"b_{name}_{k}": float(v) for k, v in f.items()}
    worst = max(f["tail_diff_points"] for f in b.values())
    targets = {
        "accepted_updates_per_s": {
            "value": a["accepted_per_s"],
            "target": ">= 300",
            "met": a["accepted_per_s"] >= 300,
        },
        "upload_p99_ms": {
            "value": a["upload_p99_ms"],
            "target": "< 100",
            "met": a["upload_p99_ms"] < 100,
        },
        "server_cpu_ms_per_update": {
            "value": a["server_cpu_ms_per_update"],
            "target": "< 3",
            "met": a["server_cpu_ms_per_update"] < 3,
        },
        "live_vs_sim_tail_accuracy_points": {
            "value": worst,
            "target": "<= 2",
            "met": worst <= 2,
        },
    }
    report("W-live", "W-live", figures, targets, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())

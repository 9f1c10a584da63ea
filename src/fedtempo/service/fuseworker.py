"""An aggregator worker (the JIT "container", SPEC C): a process of its own that fuses a round's
updates with the job's rule and writes the new model, never touching the ledger.

``python -m fedtempo.service.fuseworker BLOBS_DIR`` reads one JSON command per line on stdin
and answers each with one JSON line on stdout (after ``{"op": "ready"}`` once its imports are
done: the spawn-to-ready time is the measured deploy time). Commands:

- ``begin`` {layout, rule, partial?}: a new round; ``rule`` as ``SyncRule.describe`` wrote it,
  ``partial`` the sha of a partial sum this round already handed back to the store.
- ``add`` {sha, weight}: fuse one stored update (its delta) into the round.
- ``checkpoint``: write the running sum to the store (sum rules only); answers its sha.
- ``finish`` {base}: the round's model from the version ``base`` and what was fused, written
  to the store; answers its sha.
- ``begin_async`` {layout, algorithm}: the job's ``AsyncAlgorithm`` as ``describe`` wrote it.
- ``apply_async`` {current, versions, updates, buffer, epochs}: apply the updates in order
  with the algorithm, starting from the state the ledger describes (the current version as
  [number, sha], the updates' base versions {number: sha}, the buffered updates in order, the
  parties' K); answers each one's outcome (weight, staleness, the new version and its sha when
  one was made, the party's next K). The worker keeps no state between commands that it could
  not rebuild from them: a replaced worker gives the same bits.
- ``exit``.

Every answer carries ``cpu_s`` (this process's user + system CPU seconds so far, from the OS) and
``fuse_s`` (the wall seconds that command took). Tensors travel as files in the content-addressed
store (safetensors), never through the pipe, and nothing is pickled.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TextIO

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from fedtempo.aggregation.fusion import RunningSum
from fedtempo.aggregation.sync import Fuser, sync_rule_from
from fedtempo.aggregation.versions import VersionStore
from fedtempo.algorithms.asynchronous import AsyncAlgorithm, AsyncRunState, async_algorithm_from
from fedtempo.client.local import Update
from fedtempo.service import wire
from fedtempo.service.store import Blobs, failpoint


def encode_partial(fused: RunningSum) -> bytes:
    """A running sum as safetensors: the float64 total, its weight and count as metadata
    (``repr`` of a float reads back to the same float)."""
    if fused.total is None:
        raise ValueError("nothing fused yet")
    meta = {"weight": repr(fused.weight), "count": str(fused.count)}
    return st_save({"total": fused.total}, metadata=meta)


def decode_partial(data: bytes) -> RunningSum:
    """What ``encode_partial`` wrote (the service's own blob; models on the wire are F32)."""
    header_len = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8 : 8 + header_len])["__metadata__"]
    total = st_load(data)["total"]
    return RunningSum(total, float(meta["weight"]), int(meta["count"]))


class AsyncApply:
    """Asynchronous updates applied in order by the job's ``AsyncAlgorithm``; parsed
    blobs are cached by sha (a cache only: every command names all it needs)."""

    def __init__(self, blobs: Blobs, layout: wire.Layout, algorithm: AsyncAlgorithm) -> None:
        self.blobs, self.layout, self.alg = blobs, layout, algorithm
        self.cache: dict[str, torch.Tensor] = {}

    def _vector(self, sha: str, used: dict[str, torch.Tensor]) -> torch.Tensor:
        vector = self.cache.get(sha)
        if vector is None:
            vector = wire.parse(self.layout, self.blobs.get(sha))[0]
        used[sha] = vector
        return vector

    def _update(self, d: dict[str, Any], used: dict[str, torch.Tensor]) -> Update:
        delta = self._vector(str(d["sha"]), used)
        return Update(
            int(d["party"]),
            self.alg.task,
            int(d["base_version"]),
            delta,
            int(d["samples"]),
            int(d["steps"]),
            float(d["loss"]),
        )

    def apply(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Apply ``cmd["updates"]`` in order, each on the state the previous left (the
        ledger's state before the first: current version, the updates' base versions, the
        buffer, the parties' K); one result per update."""
        used: dict[str, torch.Tensor] = {}
        current, current_sha = cmd["current"]
        params = {int(current): self._vector(str(current_sha), used)}
        for v, sha in cmd["versions"].items():
            params[int(v)] = self._vector(str(sha), used)
        updates = [self._update(u, used) for u in cmd["updates"]]
        refs: dict[int, int] = {}
        for u in updates:
            refs[u.base_version] = refs.get(u.base_version, 0) + 1
        state = AsyncRunState(self.alg.rule.init(params[int(current)], int(current)))
        state.rule.store = VersionStore.restore(int(current), params, refs)
        state.rule.buffer = [
            (self._update(b, used), float(b["weight"])) for b in cmd.get("buffer", [])
        ]
        state.local_epochs = {int(p): int(k) for p, k in cmd.get("epochs", {}).items()}
        failpoint("mid-fusion")  # a test kills the worker with the updates half applied
        results = []
        for update in updates:
            outcome, k_next = self.alg.receive(state, update)
            self.alg.finish(state, update.base_version)
            if not outcome.accepted:
                raise ValueError(f"update refused by the rule: {outcome.reason}")
            sha = None
            if outcome.version is not None:
                sha = self.blobs.put(wire.encode(self.layout, state.params))
                used[sha] = state.params
            staleness = outcome.staleness
            results.append(
                {
                    "version": outcome.version,
                    "sha": sha,
                    "weight": outcome.weight,
                    "versions": None if staleness is None else staleness.versions,
                    "distance": None if staleness is None else staleness.distance,
                    "k_next": k_next,
                }
            )
        self.cache = used  # what the next command most likely reads again
        return {"op": "applied", "results": results}


class Fusion:
    """One worker's state: the round being fused (or the asynchronous job it applies for)."""

    def __init__(self, blobs: Blobs) -> None:
        self.blobs = blobs
        self.layout: wire.Layout | None = None
        self.fused: Fuser | None = None
        self.rule: Any = None
        self.adds = 0
        self.asynchronous: AsyncApply | None = None

    def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd.get("op")
        if op == "begin_async":
            algorithm = async_algorithm_from(cmd["algorithm"])
            self.asynchronous = AsyncApply(
                self.blobs, wire.Layout.from_json(cmd["layout"]), algorithm
            )
            return {"op": "begun"}
        if op == "apply_async":
            if self.asynchronous is None:
                raise ValueError("'apply_async' before 'begin_async'")
            return self.asynchronous.apply(cmd)
        if op == "begin":
            self.layout = wire.Layout.from_json(cmd["layout"])
            self.rule = sync_rule_from(cmd["rule"])
            self.fused = self.rule.fuser()
            if cmd.get("partial"):
                self.fused = decode_partial(self.blobs.get(str(cmd["partial"])))
            self.adds = 0
            return {"op": "begun"}
        if self.fused is None or self.layout is None:
            raise ValueError(f"{op!r} before 'begin'")
        if op == "add":
            vector = wire.parse(self.layout, self.blobs.get(str(cmd["sha"])))[0]
            self.fused.add(vector, float(cmd["weight"]))
            self.adds += 1
            if self.adds == 1:
                failpoint("mid-fusion")  # a test kills the worker with the round half fused
            return {"op": "added", "count": self.fused.count}
        if op == "checkpoint":
            if not isinstance(self.fused, RunningSum):
                raise ValueError("only a running sum can be handed back in part")
            return {"op": "partial", "sha": self.blobs.put(encode_partial(self.fused))}
        if op == "finish":
            base = wire.parse(self.layout, self.blobs.get(str(cmd["base"])))[0]
            model = self.rule.step(base, self.fused)
            sha = self.blobs.put(wire.encode(self.layout, model))
            return {"op": "done", "sha": sha, "count": self.fused.count}
        raise ValueError(f"unknown command {op!r}")


def cpu_seconds() -> float:
    """This process's user + system CPU seconds, from the OS's per-process CPU clock
    (nanosecond resolution: ``os.times`` counts in 10-ms ticks, and a forked worker that fuses a
    few small updates can stay under one tick)."""
    return time.process_time()


def run_loop(blobs: Blobs, read: Callable[[], str | None], write: Callable[[str], None]) -> None:
    """Answer commands until ``exit`` or the end of input (``read`` returns None)."""
    torch.set_num_threads(1)  # one core per worker: the pool size is the core budget
    fusion = Fusion(blobs)

    def say(msg: dict[str, Any]) -> None:
        write(json.dumps({**msg, "cpu_s": cpu_seconds()}))

    say({"op": "ready", "pid": os.getpid()})
    while (line := read()) is not None:
        if not line.strip():
            continue
        t0 = time.perf_counter()
        try:
            cmd = json.loads(line)
            if cmd.get("op") == "exit":
                say({"op": "bye"})
                return
            answer = fusion.handle(cmd)
        except Exception as exc:  # the service reads the reason; the worker stays usable
            answer = {"op": "error", "error": f"{type(exc).__name__}: {exc}"}
        say({**answer, "fuse_s": time.perf_counter() - t0})


def serve(blobs: Blobs, inp: TextIO, out: TextIO) -> None:
    """The worker over text streams, one JSON command or answer per line (a process of its
    own: ``ProcessLauncher``)."""

    def write(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    run_loop(blobs, lambda: inp.readline() or None, write)


def serve_connection(blobs_dir: str, conn: Connection) -> None:
    """The worker over a ``multiprocessing`` connection, one JSON message per ``send_bytes``
    (a child forked from a process that has already imported torch: ``ForkLauncher``)."""

    def read() -> str | None:
        try:
            return conn.recv_bytes().decode()
        except (EOFError, OSError):
            return None  # the service went away

    run_loop(Blobs(Path(blobs_dir)), read, lambda text: conn.send_bytes(text.encode()))


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m fedtempo.service.fuseworker BLOBS_DIR")
    serve(Blobs(Path(sys.argv[1])), sys.stdin, sys.stdout)


if __name__ == "__main__":
    main()

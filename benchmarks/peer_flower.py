"""The Flower side of ``w_sim.py --peer flower``: install Flower into its own environment
(peers/setup_flower.sh), write the W-sim partition for it, run the W-sim Flower app
(peers/run_flower_wsim.py) timed start to exit, and the memory of a whole process tree."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

PEERS = Path(__file__).resolve().parent / "peers"
FLOWER_PYTHON = PEERS / ".venv" / "bin" / "python"


def _processes() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, session id, resident bytes) of every process we can read."""
    page = os.sysconf("SC_PAGE_SIZE")
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        out[int(name)] = (int(fields[1]), int(fields[3]), int(fields[21]) * page)
    return out


def pss_bytes(pid: int) -> int:
    """Proportional set size: resident bytes, each page shared by k processes counted 1/k (so a
    data set in shared memory, or a shared library, counts once over all the processes that
    map it); 0 for a process that is gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


# Reading a process's proportional set (smaps_rollup walks its page tables) costs about 4 ms
# of CPU for a process holding torch: every 0.2 s over a pool's three processes that is 3% of a
# two-core machine that the pool keeps busy (the plain loop leaves a core idle for it), enough
# to move W-sim's speed-ups; resident sets come from /proc/PID/stat for well under 1 ms.
SAMPLE_S = 0.2
PSS_EVERY = 5


def tree_bytes(root: int, with_pss: bool = True) -> tuple[int, int]:
    """(resident bytes summed, proportional bytes summed) over ``root``, its descendants and
    every process of its session (a daemon that left the tree, as some of Ray's do, stays in
    the session). The first counts a page shared by k of them k times; the second once."""
    procs = _processes()
    session = procs.get(root, (0, -1, 0))[1]
    mine, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _, _) in procs.items():
            if ppid == parent and pid not in mine:
                mine.add(pid)
                frontier.append(pid)
    mine |= {pid for pid, (_, sid, _) in procs.items() if sid == session}
    alive = [p for p in mine if p in procs]
    pss = sum(pss_bytes(p) for p in alive) if with_pss else 0
    return sum(procs[p][2] for p in alive), pss


def timed_tree(
    cmd: list[str], env: dict[str, str] | None = None
) -> tuple[float, float, tuple[float, float], str]:
    """Run ``cmd`` in its own session; (wall seconds, peak MB of its largest process (wait4),
    peak MB of all its processes together as (resident sum, sampled every ``SAMPLE_S``;
    proportional sum, every ``PSS_EVERY`` samples), stdout)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )
    peak, done = [0, 0], threading.Event()

    def sample() -> None:
        ticks = 0
        while not done.wait(SAMPLE_S):
            ticks += 1
            rss, pss = tree_bytes(proc.pid, with_pss=ticks % PSS_EVERY == 0)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    lingered = drain_session(proc.pid)
    if lingered:
        print(f"({lingered} processes of {cmd[0]}'s run outlived it; waited for them)", flush=True)
    if status != 0:
        raise RuntimeError(f"{cmd} failed with status {status}")
    return wall, usage.ru_maxrss / 1024.0, (peak[0] / 2**20, peak[1] / 2**20), out


def drain_session(session: int, grace_s: float = 30.0) -> int:
    """Wait until no process of ``session`` is left (killed after ``grace_s``), so that what a
    run left behind (Ray's daemons shutting down) does not run into the next run's timing; the
    number of processes that outlived the session's leader."""
    end, seen = time.monotonic() + grace_s, set()
    while True:
        left = [pid for pid, (_, sid, _) in _processes().items() if sid == session]
        if not left:
            return len(seen)
        seen |= set(left)
        if time.monotonic() > end:
            for pid in left:
                with contextlib.suppress(OSError):  # gone meanwhile
                    os.kill(pid, 9)
        time.sleep(0.1)


def flower_python() -> tuple[Path | None, str]:
    """Flower's interpreter, installing it first if needed; (None, why) where it cannot be."""
    if not FLOWER_PYTHON.is_file():
        proc = subprocess.run(
            ["bash", str(PEERS / "setup_flower.sh")], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0 or not FLOWER_PYTHON.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return None, "Flower could not be installed: " + " | ".join(tail)
    return FLOWER_PYTHON, ""


def write_partition(path: Path) -> None:
    """The W-sim clients' training indices (the Dirichlet(0.5) split of plain_wsim.py)."""
    import numpy as np

    from fedtempo.data.datasets import load_idx_pair
    from fedtempo.data.partition import dirichlet

    data = load_idx_pair("mnist")
    parts = dirichlet(data.train.y.numpy(), 100, 0.5, 0)
    arrays: dict[str, Any] = {f"client{c}": np.asarray(p) for c, p in enumerate(parts)}
    np.savez(path, **arrays)


def mnist_dir() -> Path:
    from fedtempo.data.sources import locate

    return locate("mnist")["train_images"].parent


def flower_run(
    python: Path, partition: Path, rounds: int, per_round: int
) -> tuple[float, tuple[float, float], float]:
    """(wall s, peak MB of all its processes (resident sum, proportional sum), accuracy) of one
    W-sim run in Flower."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [
            str(python),
            str(PEERS / "run_flower_wsim.py"),
            str(mnist_dir()),
            str(partition),
            str(rounds),
            str(per_round),
            str(out),
        ]
        env = {**os.environ, "FLWR_HOME": str(Path(tmp) / "flwr"), "RAY_TMPDIR": tmp}
        wall, _, peak, _ = timed_tree(cmd, env)
        return wall, peak, float(json.loads(out.read_text())["accuracy"])

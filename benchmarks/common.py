"""Shared plumbing for benchmark scripts: results JSON in the BENCHMARKS.md interface."""

from __future__ import annotations

import datetime as dt
import json
import platform
import resource
import statistics
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    import os

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def tail_mean(curve: list[tuple[float, float]], end: float, window: float = 30.0) -> float:
    """Mean accuracy over the last ``window`` virtual seconds of a (time, accuracy) curve that
    ends at ``end`` (the last point if none falls in the window): single evaluations swing with
    the updates that happened to arrive just before them."""
    tail = [a for t, a in curve if t >= end - window] or [curve[-1][1]]
    return statistics.fmean(tail)


def save_plot(fig: Any, name: str, quick: bool) -> Path:
    """Write a matplotlib figure as benchmarks/results/<name>[_quick].png and close it."""
    import matplotlib.pyplot as plt

    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}{'_quick' if quick else ''}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_results(
    workload: str,
    figures: dict[str, float],
    targets: dict[str, dict[str, Any]],
    quick: bool,
    rows: list[dict[str, Any]] | None = None,
) -> Path:
    """The results JSON of ``workload``; ``rows``: each run's own record, kept next to the
    figures where a later run may reuse them."""
    RESULTS.mkdir(exist_ok=True)
    name = workload.lower().replace("-", "_") + ("_quick" if quick else "")
    path = RESULTS / f"{name}.json"
    payload = {
        "workload": workload,
        "quick": quick,
        "figures": figures,
        "targets": targets,
        "machine": machine(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if rows is not None:
        payload["rows"] = rows
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


def report(
    title: str,
    workload: str,
    figures: dict[str, float],
    targets: dict[str, dict[str, Any]],
    quick: bool,
) -> Path:
    """Print the figures as a table and each target as met or not; write the results JSON."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for k, v in figures.items():
        table.add_row(k, f"{v:,.4g}")
    Console().print(table)
    for name, t in targets.items():
        print(f"target {name}: {t['value']:.4g} -> {'met' if t['met'] else 'NOT met'}")
    path = write_results(workload, figures, targets, quick)
    print("results:", path)
    return path

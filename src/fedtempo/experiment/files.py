"""Writing a run's files: CSV tables, the event and evaluation logs, summary.json (last, via a
temporary file, so that a crash never leaves a half-written one)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import astuple
from pathlib import Path
from typing import Any

from fedtempo.sim.engine import SimResult
from fedtempo.sim.recorder import Evaluation, Event, columns


def write_csv(path: Path, header: list[str], rows: Iterable[Sequence[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def write_logs(out: Path, result: SimResult) -> None:
    """events.csv and evaluations.csv."""
    rec = result.recorder
    write_csv(out / "events.csv", columns(Event), [astuple(e) for e in rec.events])
    write_csv(out / "evaluations.csv", columns(Evaluation), [astuple(e) for e in rec.evaluations])


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    """summary.json, via a temporary file, so that a crash never leaves a half-written one."""
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out / "summary.json")

"""Parsers for the real traces in shared/data/traces (see its README).

Every malformed input is a DataError naming the file and, where it applies, the line or entry.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fedtempo.errors import DataError


def read_throughput(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A throughput trace: lines ``time_s  Mbit/s`` (whitespace-separated). Returns (t, mbps).

    Blank lines and lines starting with '#' are skipped. Times must not decrease; rates must be
    >= 0; a trace with no sample or only zero rates is rejected.
    """
    times: list[float] = []
    rates: list[float] = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read trace ({exc})") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.split()
        try:
            if len(fields) != 2:
                raise ValueError
            t, r = float(fields[0]), float(fields[1])
        except ValueError:
            raise DataError(
                f"{path}:{lineno}: expected two numbers 'time_s Mbit/s', got {stripped!r}"
            ) from None
        if not (np.isfinite(t) and np.isfinite(r)) or r < 0:
            raise DataError(f"{path}:{lineno}: bad values time={t}, rate={r} (need finite, >= 0)")
        if times and t < times[-1]:
            raise DataError(f"{path}:{lineno}: time {t} goes back (previous {times[-1]})")
        times.append(t)
        rates.append(r)
    if not times:
        raise DataError(f"{path}: empty trace (no samples)")
    if max(rates) <= 0:
        raise DataError(f"{path}: all throughputs are zero")
    return np.asarray(times), np.asarray(rates)


def trace_files(directory: Path) -> list[Path]:
    """The trace files of a directory, sorted by name (LICENSE/README and hidden files skipped)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: not a directory of traces")
    files = sorted(
        p
        for p in directory.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and not p.name.upper().startswith(("LICENSE", "README"))
    )
    if not files:
        raise DataError(f"{directory}: no trace files")
    return files


def _load_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read JSON ({exc})") from None


def _positive(path: Path, where: str, field: str, value: Any) -> float:
    try:
        number = float(str(value).replace(",", "").strip())
    except ValueError:
        raise DataError(f"{path}: {where}: field {field!r} is not a number: {value!r}") from None
    if not (np.isfinite(number) and number > 0):
        raise DataError(f"{path}: {where}: field {field!r} must be > 0, got {value!r}")
    return number


def read_training_latency(path: Path, model: str = "ResNet") -> tuple[np.ndarray, np.ndarray]:
    """FLHetBench per-phone training latency: (mean ms per batch, std ms) for ``model``
    (``"ResNet"`` or ``"Vit"``), one entry per measured phone."""
    data = _load_json(path)
    if not isinstance(data, list) or not data:
        raise DataError(f"{path}: expected a non-empty list of phone records")
    mean_key, std_key = f"{model} Latency", f"{model} STD"
    means, stds = [], []
    for i, rec in enumerate(data):
        if not isinstance(rec, dict) or mean_key not in rec or std_key not in rec:
            raise DataError(f"{path}: entry {i}: missing {mean_key!r} or {std_key!r}")
        means.append(_positive(path, f"entry {i}", mean_key, rec[mean_key]))
        std = float(rec[std_key]) if rec[std_key] is not None else 0.0
        stds.append(max(std, 0.0))
    return np.asarray(means), np.asarray(stds)


def read_ai_benchmark(path: Path, field: str = "CPU_F_AI_Score") -> np.ndarray:
    """AI-Benchmark scores (higher = faster), one per phone."""
    data = _load_json(path)
    if not isinstance(data, list) or not data:
        raise DataError(f"{path}: expected a non-empty list of phone records")
    out = []
    for i, rec in enumerate(data):
        if not isinstance(rec, dict) or field not in rec:
            raise DataError(f"{path}: entry {i}: missing {field!r}")
        out.append(_positive(path, f"entry {i}", field, rec[field]))
    return np.asarray(out)


def read_flash(path: Path) -> list[tuple[np.ndarray, float]]:
    """FLASH ready intervals: per usable client, a (k x 2) array of [start, end] seconds relative
    to its ``trace_start`` (sorted), and the trace's span (trace_end - trace_start, at least the
    last end). Clients with isSuccess false or no interval are left out; order: client id."""
    data = _load_json(path)
    if not isinstance(data, dict) or not data:
        raise DataError(f"{path}: expected a dict client id -> record")
    out = []
    for cid in sorted(data, key=lambda k: (len(k), k)):
        rec = data[cid]
        if not isinstance(rec, dict) or "ready_time" not in rec or "trace_start" not in rec:
            raise DataError(f"{path}: client {cid}: missing 'ready_time' or 'trace_start'")
        if not rec.get("isSuccess", True) or not rec["ready_time"]:
            continue
        try:
            iv = np.asarray(rec["ready_time"], dtype=np.float64).reshape(-1, 2)
        except (ValueError, TypeError):
            raise DataError(
                f"{path}: client {cid}: ready_time is not a list of [start, end]"
            ) from None
        if np.any(iv[:, 1] < iv[:, 0]):
            raise DataError(f"{path}: client {cid}: an interval ends before it starts")
        start = float(rec["trace_start"])
        iv = iv[np.argsort(iv[:, 0], kind="stable")] - start
        span = max(float(rec.get("trace_end", 0.0)) - start, float(iv[:, 1].max()), 1.0)
        out.append((iv, span))
    if not out:
        raise DataError(f"{path}: no client with a usable ready_time")
    return out

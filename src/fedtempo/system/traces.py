"""Parsers for the real traces in shared/data/traces (see its README).

Every malformed input is a DataError naming the file and, where it applies, the line or entry.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedtempo.errors import DataError


def read_throughput(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A throughput trace: lines ``time_s  Mbit/s`` (whitespace-separated). Returns (t, mbps).

    Blank lines and lines starting with '#' are skipped. Times must not decrease; rates must be
    >= 0; a trace with no sample or only zero rates is rejected.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read trace ({exc})") from None
    fast = _parse_clean(text)
    if fast is not None:
        return fast
    return _parse_lines(path, text)  # the slow way, which names the line that is wrong


def _parse_clean(text: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The whole trace at once, when it has no comment and every check passes; else None."""
    if "#" in text or not text.strip():
        return None
    try:  # numpy's C reader; it refuses a line without exactly two numbers
        values = np.loadtxt(io.StringIO(text), dtype=np.float64, ndmin=2, comments=None)
    except ValueError:
        return None
    if values.shape[1] != 2:
        return None
    t, r = values[:, 0].copy(), values[:, 1].copy()
    if not (np.isfinite(values).all() and (r >= 0).all() and (np.diff(t) >= 0).all()):
        return None
    if r.max() <= 0:
        return None
    return t, r


def _parse_lines(path: Path, text: str) -> tuple[np.ndarray, np.ndarray]:
    times: list[float] = []
    rates: list[float] = []
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


def _number(path: Path, where: str, field: str, value: Any) -> float:
    try:
        number = float(str(value).replace(",", "").strip())
    except ValueError:
        raise DataError(f"{path}: {where}: field {field!r} is not a number: {value!r}") from None
    if not np.isfinite(number):
        raise DataError(f"{path}: {where}: field {field!r} is not finite: {value!r}")
    return number


def _positive(path: Path, where: str, field: str, value: Any) -> float:
    number = _number(path, where, field, value)
    if not number > 0:
        raise DataError(f"{path}: {where}: field {field!r} must be > 0, got {value!r}")
    return number


@dataclass(frozen=True)
class LatencyTrace:
    """Measured training latency per phone (ms per batch): mean and std, and how many records
    had no measurement for the requested model (missing or 0) and were skipped."""

    mean_ms: np.ndarray
    std_ms: np.ndarray
    skipped: int
    total: int


def read_training_latency(path: Path, model: str = "ResNet") -> LatencyTrace:
    """FLHetBench per-phone training latency for ``model`` (``"ResNet"`` or ``"Vit"``).

    A record without the model's fields, or with latency 0, has no measurement and is skipped
    (counted in ``skipped``); a non-numeric or negative value is an error naming the entry.
    """
    data = _load_json(path)
    if not isinstance(data, list) or not data:
        raise DataError(f"{path}: expected a non-empty list of phone records")
    mean_key, std_key = f"{model} Latency", f"{model} STD"
    means, stds = [], []
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise DataError(f"{path}: entry {i}: not a record")
        if rec.get(mean_key) in (None, 0, 0.0):
            continue
        means.append(_positive(path, f"entry {i}", mean_key, rec[mean_key]))
        std = _number(path, f"entry {i}", std_key, rec.get(std_key) or 0.0)
        if std < 0:
            raise DataError(f"{path}: entry {i}: field {std_key!r} is negative: {std}")
        stds.append(std)
    if not means:
        raise DataError(f"{path}: no record has a {mean_key!r} measurement")
    return LatencyTrace(np.asarray(means), np.asarray(stds), len(data) - len(means), len(data))


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


def _merge_intervals(iv: np.ndarray) -> np.ndarray:
    """Sort intervals and merge those that overlap or touch."""
    iv = iv[np.argsort(iv[:, 0], kind="stable")]
    merged: list[list[float]] = []
    for a, b in iv:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([float(a), float(b)])
    return np.asarray(merged, dtype=np.float64).reshape(-1, 2)


def read_flash(path: Path) -> list[tuple[np.ndarray, float]]:
    """FLASH ready intervals: per usable client, a (k x 2) array of [start, end] seconds relative
    to its ``trace_start`` (sorted, overlapping ones merged, empty ones dropped), and the trace's
    span (trace_end - trace_start, at least the last end). Clients with isSuccess false or no
    non-empty interval are left out; order: client id."""
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
        iv = _merge_intervals(iv[iv[:, 1] > iv[:, 0]]) - start
        if len(iv) == 0:
            continue
        span = max(float(rec.get("trace_end", 0.0)) - start, float(iv[:, 1].max()), 1.0)
        out.append((iv, span))
    if not out:
        raise DataError(f"{path}: no client with a usable ready_time")
    return out

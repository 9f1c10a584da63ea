"""Running an experiment and writing its results folder.

Layout of DIR: config.toml (the resolved config, runnable again), events.csv, evaluations.csv,
clients.csv, accuracy.png, and summary.json, which is written last: a folder without
summary.json is an incomplete run.
"""

from __future__ import annotations

import dataclasses
import platform
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import astuple
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w
import torch

import fedtempo
from fedtempo.experiment.build import Built, build
from fedtempo.experiment.config import ExperimentConfig, to_dict
from fedtempo.experiment.files import write_csv, write_logs, write_summary
from fedtempo.experiment.plots import accuracy_plot, warm_up
from fedtempo.experiment.servers import AsyncConfig, MaflServer, RoundsConfig
from fedtempo.sim.engine import SimResult
from fedtempo.sim.recorder import Evaluation, Event, Recorder, UpdateRecord, columns
from fedtempo.sim.task import SimTask

ACCURACY_TARGETS = (0.8, 0.9, 0.95, 0.97)


def time_to_accuracy(evals: Sequence[Evaluation], target: float) -> float | None:
    """First virtual time at which test accuracy >= target, or None if never."""
    for e in evals:
        if e.accuracy >= target:
            return e.time
    return None


CLIENT_COLUMNS = [
    "client",
    "train_samples",
    "test_samples",
    "flops_per_s",
    "uplink_mbps",
    "downlink_mbps",
    "updates",
    "fail",
    "offline",
    "late",
    "download_s",
    "compute_s",
    "upload_s",
    "compute_j",
    "upload_j",
    "energy_j",
    "bytes_up",
    "bytes_down",
]
_COUNTED = {"upload": "updates", "fail": "fail", "offline": "offline", "late": "late"}
_TIMED = ("download", "compute", "upload")
_INTEGER = {"client", "train_samples", "test_samples", *_COUNTED.values(), "bytes_up", "bytes_down"}


def client_table(built: Built, events: Sequence[Event]) -> dict[str, np.ndarray]:
    """Per client, one array per column of CLIENT_COLUMNS: data, device, what it did, the time
    it spent and the energy it used (arrays, not rows: a million clients stay small)."""
    pop = built.population
    n = pop.size
    table = {c: np.zeros(n, np.int64 if c in _INTEGER else np.float64) for c in CLIENT_COLUMNS}
    table["client"] = np.arange(n, dtype=np.int64)
    table["train_samples"] = np.asarray(built.train_sizes, dtype=np.int64)
    table["test_samples"] = np.asarray(built.test_sizes, dtype=np.int64)
    table["flops_per_s"] = np.asarray(pop.compute.flops_per_s, dtype=np.float64)
    table["uplink_mbps"] = np.array([pop.uplink.mean_rate_bps(c) for c in range(n)]) / 1e6
    table["downlink_mbps"] = np.array([pop.downlink.mean_rate_bps(c) for c in range(n)]) / 1e6
    for e in events:
        c = e.client
        if c < 0:
            continue
        if e.kind in _COUNTED:
            table[_COUNTED[e.kind]][c] += 1
        if e.kind in _TIMED:
            table[f"{e.kind}_s"][c] += e.duration
        table["compute_j" if e.kind == "compute" else "upload_j"][c] += e.energy
        table["energy_j"][c] += e.energy
        if e.kind == "upload":
            table["bytes_up"][c] += e.bytes
        elif e.kind == "download":
            table["bytes_down"][c] += e.bytes
    return table


def client_rows(table: dict[str, np.ndarray], chunk: int = 1 << 16) -> Iterator[list[Any]]:
    """The table's rows, as Python numbers, ``chunk`` clients at a time."""
    n = len(table["client"])
    for start in range(0, n, chunk):
        cols = [table[c][start : start + chunk].tolist() for c in CLIENT_COLUMNS]
        yield from (list(row) for row in zip(*cols, strict=True))


def task_row(result: SimResult, task: SimTask, events: Sequence[Event]) -> dict[str, Any]:
    """One task's figures: accuracy from its first to its last evaluation, updates, sessions
    and energy."""
    evals = [e for e in result.recorder.evaluations if e.task == task.task]
    mine = [e for e in events if e.task == task.task]
    return {
        "name": task.name,
        "initial_accuracy": evals[0].accuracy,
        "final_accuracy": evals[-1].accuracy,
        "final_loss": evals[-1].loss,
        "best_accuracy": max(e.accuracy for e in evals),
        "model_version": evals[-1].version,
        "updates_applied": task.model.updates_applied,
        "time_to_accuracy_s": {str(a): time_to_accuracy(evals, a) for a in ACCURACY_TARGETS},
        "sessions": sum(1 for e in mine if e.kind == "dispatch"),
        "energy_j": sum(e.energy for e in mine),
        "compute_energy_j": sum(e.energy for e in mine if e.kind == "compute"),
        "upload_energy_j": sum(e.energy for e in mine if e.kind == "upload"),
        "model_parameters": task.profile.num_parameters,
        "model_train_flops_per_sample": task.profile.train_flops,
    }


def summarize(config: ExperimentConfig, built: Built, result: SimResult) -> dict[str, Any]:
    """The run's summary: per task (``tasks``) and in total; a single-model run also lists its
    one task's figures at the top level, an MA-FL run its scheduler and (the optimiser) every
    horizon's objective history and solve time."""
    events = result.recorder.events
    rows = [task_row(result, t, events) for t in built.tasks]
    out: dict[str, Any] = {
        "name": config.name,
        "algorithm": config.server.algorithm,
        "seed": config.seed,
        "num_clients": len(built.train_sizes),
        "virtual_time_s": result.virtual_time,
        "wall_s": result.recorder.wall(),
        "final_accuracy": statistics.fmean(r["final_accuracy"] for r in rows),
        "best_accuracy": statistics.fmean(r["best_accuracy"] for r in rows),
        "updates_applied": sum(r["updates_applied"] for r in rows),
        "sessions": sum(r["sessions"] for r in rows),
        "bytes_up": sum(e.bytes for e in events if e.kind == "upload"),
        "bytes_down": sum(e.bytes for e in events if e.kind == "download"),
        "late_updates": sum(1 for e in events if e.kind == "late"),
        "failed_sessions": sum(1 for e in events if e.kind == "fail"),
        "offline_sessions": sum(1 for e in events if e.kind == "offline"),
        "energy_j": sum(e.energy for e in events),
        "compute_energy_j": sum(e.energy for e in events if e.kind == "compute"),
        "population_notes": list(built.population.notes),
        "rejected_updates": sum(1 for u in result.recorder.updates if u.rejected),
        "tasks": rows,
        "fedtempo": fedtempo.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if isinstance(config.server, MaflServer):
        out["algorithm"] = f"mafl/{config.mafl.scheduler}"
        out |= {"scheduler": config.mafl.scheduler, "beta_e": config.mafl.beta_e}
        for row, tc in zip(rows, config.tasks, strict=True):
            row |= {"dataset": tc.data.dataset, "model": tc.model.name}
            row["warm_rounds"] = tc.warm_rounds
        plans = getattr(built.scheduler, "log", None)  # the optimiser's per-horizon record
        if plans is not None:
            out["plans"] = [dataclasses.asdict(p) for p in plans]
        return out
    one = {k: v for k, v in rows[0].items() if k not in ("name", "sessions")}
    return out | one | {"dataset": config.data.dataset, "model": config.model.name}


def write_results(
    out: Path, config: ExperimentConfig, built: Built, result: SimResult
) -> dict[str, Any]:
    """Write every result file, summary.json last; returns the summary."""
    rec = result.recorder
    write_logs(out, result)
    write_csv(out / "clients.csv", CLIENT_COLUMNS, client_rows(client_table(built, rec.events)))
    if rec.updates:
        write_csv(out / "updates.csv", columns(UpdateRecord), [astuple(u) for u in rec.updates])
    curves: list[tuple[str, list[Evaluation]]]
    if len(built.tasks) == 1:
        curves = [(config.server.algorithm, rec.evaluations)]
        title = f"{config.name}: {config.data.dataset}, {config.model.name}"
    else:
        curves = [(t.name, [e for e in rec.evaluations if e.task == t.task]) for t in built.tasks]
        title = f"{config.name}: MA-FL, {config.mafl.scheduler}"
    accuracy_plot(curves, out / "accuracy.png", title=title)
    summary = summarize(config, built, result)
    write_summary(out, summary)
    return summary


def run_experiment(
    config: ExperimentConfig,
    out: Path | None,
    progress: Callable[[float, float], None] | None = None,
) -> tuple[dict[str, Any], SimResult]:
    """Build and run ``config``; write results to ``out`` (if given). ``progress(now, fraction)``
    is called as the virtual clock advances."""
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").unlink(missing_ok=True)  # an old summary must not outlive a crash
        (out / "config.toml").write_text(tomli_w.dumps(to_dict(config)), encoding="utf-8")
    limit = config.stop.virtual_time
    holder: dict[str, Built] = {}

    def on_progress(now: float) -> None:
        if progress is None or "b" not in holder:
            return
        fraction = _progress(config, holder["b"], now)
        progress(now, max(fraction, now / limit) if limit else fraction)

    recorder = Recorder(on_progress)
    built = build(config, recorder)
    holder["b"] = built
    if out is not None:
        built.simulation.on_finish = warm_up  # the plots' import, during the last evaluation
    result = built.simulation.run()
    if out is None:
        return summarize(config, built, result), result
    return write_results(out, config, built, result), result


def _progress(config: ExperimentConfig, built: Built, now: float) -> float:
    """How far the run is, in [0, 1], by its own measure of work."""
    s, model = config.server, built.task.model
    if isinstance(s, AsyncConfig) and s.max_updates:
        return model.updates_applied / s.max_updates
    if isinstance(s, RoundsConfig):
        return model.version / s.rounds
    if isinstance(s, MaflServer):
        return now / (config.mafl.rounds * config.mafl.round_s)
    return 0.0

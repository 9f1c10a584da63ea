"""Results of a multi-model (MA-FL) run: per task and in total, accuracy and energy."""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Any

from fedtempo.experiment.config import ExperimentConfig
from fedtempo.experiment.files import write_logs, write_summary
from fedtempo.experiment.multibuild import BuiltMulti
from fedtempo.experiment.plots import accuracy_plot
from fedtempo.multitask.optimised import SCAScheduler
from fedtempo.sim.engine import SimResult


def _task_row(
    built: BuiltMulti, result: SimResult, m: int, config: ExperimentConfig
) -> dict[str, Any]:
    evals = [e for e in result.recorder.evaluations if e.task == m]
    mine = [e for e in result.recorder.events if e.task == m]
    tc = config.tasks[m]
    return {
        "name": tc.name,
        "dataset": tc.data.dataset,
        "model": tc.model.name,
        "warm_rounds": tc.warm_rounds,
        "initial_accuracy": evals[0].accuracy,
        "final_accuracy": evals[-1].accuracy,
        "final_loss": evals[-1].loss,
        "best_accuracy": max(e.accuracy for e in evals),
        "updates_applied": built.tasks[m].model.updates_applied,
        "sessions": sum(1 for e in mine if e.kind == "dispatch"),
        "energy_j": sum(e.energy for e in mine),
        "compute_energy_j": sum(e.energy for e in mine if e.kind == "compute"),
        "upload_energy_j": sum(e.energy for e in mine if e.kind == "upload"),
    }


def summarize_multi(
    config: ExperimentConfig, built: BuiltMulti, result: SimResult
) -> dict[str, Any]:
    """Per-task rows, totals (mean final accuracy, energy) and, for the optimiser, every
    horizon's objective history and solve time."""
    rows = [_task_row(built, result, m, config) for m in range(len(built.tasks))]
    events = result.recorder.events
    out: dict[str, Any] = {
        "name": config.name,
        "algorithm": f"mafl/{config.mafl.scheduler}",
        "scheduler": config.mafl.scheduler,
        "beta_e": config.mafl.beta_e,
        "seed": config.seed,
        "virtual_time_s": result.virtual_time,
        "wall_s": result.recorder.wall(),
        "final_accuracy": statistics.fmean(r["final_accuracy"] for r in rows),
        "best_accuracy": statistics.fmean(r["best_accuracy"] for r in rows),
        "time_to_accuracy_s": {},
        "updates_applied": sum(r["updates_applied"] for r in rows),
        "bytes_up": sum(e.bytes for e in events if e.kind == "upload"),
        "energy_j": sum(r["energy_j"] for r in rows),
        "sessions": sum(r["sessions"] for r in rows),
        "tasks": rows,
        "population_notes": list(built.population.notes),
    }
    if isinstance(built.scheduler, SCAScheduler):
        out["plans"] = [dataclasses.asdict(p) for p in built.scheduler.log]
    return out


def write_multi(
    out: Path, config: ExperimentConfig, built: BuiltMulti, result: SimResult
) -> dict[str, Any]:
    write_logs(out, result)
    names = [tc.name for tc in config.tasks]
    accuracy_plot(
        [
            (names[m], [e for e in result.recorder.evaluations if e.task == m])
            for m in range(len(names))
        ],
        out / "accuracy.png",
        title=f"{config.name}: MA-FL, {config.mafl.scheduler}",
    )
    summary = summarize_multi(config, built, result)
    write_summary(out, summary)
    return summary

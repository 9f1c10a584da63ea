"""Several runs on the same population and seed, one accuracy-versus-virtual-time plot."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fedtempo.errors import ConfigError
from fedtempo.experiment.config import load
from fedtempo.experiment.plots import accuracy_plot
from fedtempo.sim.recorder import Evaluation

Runner = Callable[[Path | None, Path | None, list[str]], dict[str, Any]]


def read_evaluations(path: Path) -> list[Evaluation]:
    with path.open(encoding="utf-8") as fh:
        return [
            Evaluation(
                float(r["time"]),
                float(r["wall_s"]),
                int(r["task"]),
                int(r["version"]),
                int(r["updates"]),
                float(r["accuracy"]),
                float(r["loss"]),
            )
            for r in csv.DictReader(fh)
        ]


def compare_runs(
    configs: Sequence[Path], out: Path, overrides: list[str], runner: Runner
) -> list[dict[str, Any]]:
    """Run each config into ``out/<name>``; write ``out/accuracy.png`` and ``comparison.json``.

    Names must be distinct (they name the sub-folders); population and seed come from each config,
    so configs meant to be compared should differ only in the algorithm.
    """
    names = [load(c, overrides).name for c in configs]
    if len(set(names)) != len(names):
        raise ConfigError(f"compare: configs must have distinct names, got {names}")
    summaries = [runner(c, out / n, overrides) for c, n in zip(configs, names, strict=True)]
    curves = [(n, read_evaluations(out / n / "evaluations.csv")) for n in names]
    accuracy_plot(curves, out / "accuracy.png", title="accuracy versus virtual time")
    (out / "comparison.json").write_text(json.dumps(summaries, indent=2) + "\n", encoding="utf-8")
    return summaries

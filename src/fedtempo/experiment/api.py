"""The two calls most users need: ``load_config`` and ``run``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedtempo.experiment.config import ExperimentConfig, load
from fedtempo.experiment.results import run_experiment


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> ExperimentConfig:
    """A validated config: the TOML file at ``path`` (None: the embedded default) with
    ``key.path=value`` overrides laid over it. Raises ``ConfigError`` naming the bad key."""
    return load(Path(path) if path is not None else None, overrides)


def run(
    config: ExperimentConfig | str | Path | None = None, out: str | Path | None = None
) -> dict[str, Any]:
    """Run an experiment (a config, a TOML path, or None for the embedded default) on the
    virtual clock; write its results folder to ``out`` when given; return its summary."""
    if not isinstance(config, ExperimentConfig):
        config = load_config(config)
    summary, _ = run_experiment(config, Path(out) if out is not None else None)
    return summary

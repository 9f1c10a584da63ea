"""Typed config, build(config) -> simulation, results folder, plots."""

from fedtempo.experiment.config import ExperimentConfig, load, validate
from fedtempo.experiment.results import run_experiment

__all__ = ["ExperimentConfig", "load", "run_experiment", "validate"]

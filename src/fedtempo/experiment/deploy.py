"""A run config as a service job, and a party's side of it: the edge where config meets network.

- ``job_spec(config)``: what ``fedtempo job create`` sends (model, train, server and job
  sections, the model's input shape and classes); data and partition stay with the parties.
- ``blueprint(spec)``: the service's job factory; the same algorithm objects a simulation of
  the config would use (``FedAvgRounds``, ``AsyncAlgorithm`` with the config's rule).
- ``local_trainer``: a party's training, the simulator's own (same local procedure, same
  batch stream per client, base version and dispatch).
- ``shard`` / ``read_data``: a party's data from a config's partition, or from a file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedtempo.algorithms.asynchronous import AsyncAlgorithm
from fedtempo.algorithms.fedavg import FedAvgRounds
from fedtempo.algorithms.protocol import ModelState, RoundAlgorithm, Workload
from fedtempo.client.local import LocalSpec, train_local
from fedtempo.errors import ConfigError
from fedtempo.experiment.config import ExperimentConfig, to_dict, validate
from fedtempo.experiment.drivers import adaptive_epochs, async_rule, sync_rule
from fedtempo.experiment.parts import initial_model, local_spec, test_evaluator
from fedtempo.experiment.population import build_population
from fedtempo.experiment.servers import AsyncConfig, FedAvgServer
from fedtempo.experiment.taskdata import task_data
from fedtempo.models.profile import profile_model
from fedtempo.models.zoo import MODELS
from fedtempo.params import flatten
from fedtempo.rng import Streams
from fedtempo.service.jobs import Blueprint, JobSettings
from fedtempo.service.party import Pace, Trained, WorkTask
from fedtempo.service.wire import Layout, parse

SERVICE_ALGORITHMS = ("fedavg", "fedprox", "fedasync", "fedbuff", "asyncfeded")
SPEC_KEYS = ("name", "seed", "model", "train", "server", "job")
MAX_PARAMETERS = 1 << 28  # 1 GiB of float32 per model version: what one job may ask of the server


def _unservable(algorithm: str) -> str:
    return (
        f"server.algorithm: {algorithm!r} cannot run as a service job yet "
        f"(one of {', '.join(SERVICE_ALGORITHMS)})"
    )


def job_spec(config: ExperimentConfig) -> dict[str, Any]:
    """The job a config describes, as JSON-ready data (its data set gives the model's input
    shape and number of classes)."""
    if config.server.algorithm not in SERVICE_ALGORITHMS:
        raise ConfigError(_unservable(config.server.algorithm))
    task = task_data(config, Streams(config.seed))
    data = to_dict(config)
    spec = {k: data[k] for k in SPEC_KEYS if k in data}
    spec["input_shape"] = list(task.input_shape)
    spec["num_classes"] = int(task.num_classes)
    return spec


def _config(spec: Mapping[str, Any]) -> ExperimentConfig:
    data = {k: spec[k] for k in SPEC_KEYS if k in spec}
    try:
        return validate(dict(data), "job spec")
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def _shape(spec: Mapping[str, Any]) -> tuple[tuple[int, ...], int]:
    shape, classes = spec.get("input_shape"), spec.get("num_classes")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and 0 < d <= 4096 for d in shape)
        or math.prod(shape) > 1 << 22
    ):
        raise ValueError(f"input_shape: a list of positive sizes, got {shape!r}")
    if not isinstance(classes, int) or not 1 < classes <= 100_000:
        raise ValueError(f"num_classes: an integer > 1, got {classes!r}")
    return tuple(shape), classes


def _model_and_spec(spec: Mapping[str, Any]) -> tuple[ExperimentConfig, torch.nn.Module, LocalSpec]:
    config = _config(spec)
    shape, classes = _shape(spec)
    try:
        with torch.device("meta"):  # the size first, without allocating anything
            size = sum(p.numel() for p in MODELS[config.model.name](shape, classes).parameters())
        if size > MAX_PARAMETERS:
            raise ValueError(
                f"model: {config.model.name} on input {list(shape)} with {classes} classes has "
                f"{size:,} parameters, over the service's limit of {MAX_PARAMETERS:,}"
            )
        model = initial_model(config, shape, classes)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return config, model, local_spec(config)


def blueprint(spec: Mapping[str, Any]) -> Blueprint:
    """The service's job factory: ValueError names what is wrong with ``spec``."""
    config, model, local = _model_and_spec(spec)
    s, j = config.server, config.job
    if s.algorithm not in SERVICE_ALGORITHMS:
        raise ValueError(_unservable(s.algorithm))
    layout, initial = Layout.of(model), flatten(model)
    if isinstance(s, AsyncConfig):
        settings = JobSettings(
            "async",
            seed=config.seed,
            concurrency=s.concurrency,
            max_updates=s.max_updates,
            task_timeout_s=j.task_timeout_s,
        )
        algorithm = AsyncAlgorithm(async_rule(s), 0, adaptive_epochs(s))
        return Blueprint(layout, initial, settings, s.algorithm, asynchronous=algorithm)
    assert isinstance(s, FedAvgServer)  # fedprox is a FedAvgServer with mu
    profile = profile_model(config.model.name, model, _shape(spec)[0])
    rule = sync_rule(s)

    def rounds(samples: Sequence[int]) -> RoundAlgorithm[ModelState]:
        return FedAvgRounds(rule, Workload(0, profile, local, samples))

    settings = JobSettings(
        "rounds",
        seed=config.seed,
        rounds=s.rounds,
        clients_per_round=s.clients_per_round,
        quorum=j.quorum,
        deadline_s=j.deadline_s,
        gather_s=j.gather_s,
        close_at_quorum=j.close == "quorum",
    )
    return Blueprint(layout, initial, settings, s.algorithm, rounds=rounds, rule=rule)


def local_trainer(
    spec: Mapping[str, Any], party: int, x: torch.Tensor, y: torch.Tensor
) -> tuple[Any, int]:
    """A party's training function (the simulator's procedure and batch streams: party id =
    client id) and its number of samples."""
    config, model, local = _model_and_spec(spec)
    streams = Streams(config.seed)

    def train(task: WorkTask, start: torch.Tensor) -> Trained:
        gen = streams.torch("train", 0, party, task.base_version, task.dispatch)
        delta, steps, loss = train_local(model, start, x, y, local, gen, task.epochs)
        return Trained(delta, len(y), steps, loss)

    return train, len(y)


def shard(config: ExperimentConfig, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Client ``index``'s training data in ``config``'s partition (for demos and emulation)."""
    n = config.partition.num_clients
    if not 0 <= index < n:
        raise ConfigError(f"--index: {index} is not a client of the partition (0..{n - 1})")
    x, y = task_data(config, Streams(config.seed)).clients.data(index)
    return x.clone(), y.clone()  # a copy: a view would keep the whole data set alive


def read_data(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A party's own data: ``.npz`` (no pickle) or ``.safetensors`` holding ``x`` and ``y``."""
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                x, y = torch.from_numpy(f["x"]), torch.from_numpy(f["y"])
        elif path.suffix == ".safetensors":
            from safetensors.torch import load_file

            t = load_file(str(path))
            x, y = t["x"], t["y"]
        else:
            raise ConfigError(f"{path}: data files are .npz or .safetensors (with x and y)")
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read x and y ({exc})") from None
    if len(x) != len(y):
        raise ConfigError(f"{path}: x has {len(x)} rows, y has {len(y)}")
    return x.to(torch.float32), y.to(torch.int64)


def paces(config: ExperimentConfig, scale: float) -> list[Pace]:
    """Each device's emulated download, compute (per local epoch) and upload seconds, from the
    config's population at its mean rates, times ``scale``."""
    streams = Streams(config.seed)
    data = task_data(config, streams)
    population = build_population(config.devices, len(data.train_sizes), streams)
    model = initial_model(config, data.input_shape, data.num_classes)
    profile = profile_model(config.model.name, model, data.input_shape)
    bits = float(profile.size_bits)
    speeds = population.compute.flops_per_s
    out = []
    for c, samples in enumerate(data.train_sizes.tolist()):
        flops = float(profile.train_flops) * samples  # one local epoch
        up = bits / population.uplink.mean_rate_bps(c)
        down = bits / population.downlink.mean_rate_bps(c)
        compute = scale * flops / float(speeds[c])
        out.append(Pace(scale * down, compute, scale * up, config.train.epochs))
    return out


def model_evaluator(
    config: ExperimentConfig,
) -> tuple[Callable[[bytes], tuple[float, float]], int]:
    """(accuracy, loss) on ``config``'s test set of a job's model given as safetensors bytes,
    and the test set's size."""
    data = task_data(config, Streams(config.seed))
    model = initial_model(config, data.input_shape, data.num_classes)
    evaluate, layout = test_evaluator(model, data.test), Layout.of(model)
    return (lambda blob: evaluate(parse(layout, blob)[0])), len(data.test)


def model_accuracy(config: ExperimentConfig) -> Callable[[bytes], float]:
    """Test accuracy on ``config``'s test set of a job's model, given as safetensors bytes."""
    evaluate, _ = model_evaluator(config)
    return lambda blob: evaluate(blob)[0]

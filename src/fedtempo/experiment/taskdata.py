"""A task's data as a run sees it: where each client's training samples come from, the global
test set, and per client its train and test sample counts, whether the data set sits in memory
(``IndexedClients`` over a partition) or is generated per device when it trains
(``SyntheticClients``, ``data.synthetic.lazy``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedtempo.data.clients import ClientData, IndexedClients
from fedtempo.data.datasets import ArrayDataset, DataBundle
from fedtempo.data.synthetic import SyntheticClients
from fedtempo.experiment.config import ExperimentConfig
from fedtempo.experiment.parts import load_data, make_partition
from fedtempo.rng import Streams


@dataclass(frozen=True)
class TaskData:
    """``clients``: what the trainer reads; ``test``: the global test set; ``train_sizes`` /
    ``test_sizes``: per client. ``bundle`` and ``client_test`` (per-client personal test index
    arrays into ``bundle.train``) exist only for data held in memory."""

    clients: ClientData
    input_shape: tuple[int, ...]
    num_classes: int
    test: ArrayDataset
    train_sizes: np.ndarray
    test_sizes: np.ndarray
    bundle: DataBundle | None = None
    client_test: list[np.ndarray] | None = None


def lazy_synthetic(config: ExperimentConfig, streams: Streams, task: int = 0) -> TaskData:
    """Synthetic devices generated per device (counts and root from the stream ("data", task));
    the test set: the test samples of ``eval.test_devices`` devices drawn from the stream
    ("eval-devices", task)."""
    s, n = config.data.synthetic, config.partition.num_clients
    source = SyntheticClients(
        s.alpha,
        s.beta,
        n,
        streams.numpy("data", task),
        size_mean=s.size_mean,
        size_sigma=s.size_sigma,
        min_size=s.min_size,
        test_fraction=config.data.test_fraction,
    )
    draw = streams.numpy("eval-devices", task)
    picked = draw.choice(n, min(n, config.eval.test_devices), replace=False)
    test = source.test_data(sorted(int(k) for k in picked))
    train_sizes = source.cuts.astype(np.int64)
    test_sizes = source.counts.astype(np.int64) - train_sizes
    return TaskData(source, source.input_shape, source.num_classes, test, train_sizes, test_sizes)


def task_data(config: ExperimentConfig, streams: Streams, task: int = 0) -> TaskData:
    """Task ``task``'s data under ``config`` (its partition's clients, or lazy Synthetic
    devices). Raises ConfigError when Synthetic up front would not fit in memory (load_data)."""
    if config.data.dataset == "synthetic" and config.data.synthetic.lazy:
        return lazy_synthetic(config, streams, task)
    bundle = load_data(config, streams, task)
    client_train, client_test = make_partition(config, bundle, streams, task)
    clients = IndexedClients(bundle.train.x, bundle.train.y, client_train)
    return TaskData(
        clients,
        bundle.train.input_shape,
        bundle.train.num_classes,
        bundle.test,
        np.array([len(c) for c in client_train], dtype=np.int64),
        np.array([len(c) for c in client_test], dtype=np.int64),
        bundle,
        client_test,
    )

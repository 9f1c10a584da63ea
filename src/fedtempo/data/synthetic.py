"""LEAF Synthetic(alpha, beta): the naturally federated data set of FedProx (Li et al., 2020).

Device k: u_k ~ N(0, alpha), W_k ~ N(u_k, 1) (classes x dim), b_k ~ N(u_k, 1); B_k ~ N(0, beta),
v_k ~ N(B_k, 1) (dim); features x ~ N(v_k, Sigma), Sigma = diag(j^-1.2); label argmax(W_k x + b_k)
(softmax is monotone, so the argmax of the logits is the same). Sample counts follow a power law:
floor(lognormal(size_mean, size_sigma)) + min_size, as in the FedProx generator.

``leaf_synthetic`` generates every device at once, from one stream; ``SyntheticClients`` generates
a device when it is asked for, from the device's own stream (seed, k), so that a million devices
cost two counts each until they train.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fedtempo.data.datasets import ArrayDataset, DataBundle
from fedtempo.errors import DataError


def synthetic_counts(
    num_clients: int, rng: np.random.Generator, size_mean: float, size_sigma: float, min_size: int
) -> np.ndarray:
    """Power-law (lognormal) sample counts per device."""
    return rng.lognormal(size_mean, size_sigma, num_clients).astype(np.int64) + min_size


def _feature_sd(dim: int) -> np.ndarray:
    return np.asarray(np.sqrt(np.arange(1, dim + 1, dtype=np.float64) ** -1.2))


def synthetic_device(
    rng: np.random.Generator, n: int, alpha: float, beta: float, sd: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """One device's ``n`` samples (float64 features, int64 labels), drawn from ``rng``."""
    dim = len(sd)
    u_k = rng.normal(0.0, alpha) if alpha > 0 else 0.0
    big_b = rng.normal(0.0, beta) if beta > 0 else 0.0
    w = rng.normal(u_k, 1.0, (num_classes, dim))
    b = rng.normal(u_k, 1.0, num_classes)
    v = rng.normal(big_b, 1.0, dim)
    x = v + rng.standard_normal((n, dim)) * sd
    return x, np.argmax(x @ w.T + b, axis=1)


def leaf_synthetic(
    alpha: float,
    beta: float,
    num_clients: int,
    rng: np.random.Generator,
    *,
    dim: int = 60,
    num_classes: int = 10,
    size_mean: float = 4.0,
    size_sigma: float = 2.0,
    min_size: int = 50,
    test_fraction: float = 0.2,
) -> DataBundle:
    """Generate Synthetic(alpha, beta) for ``num_clients`` devices.

    Each device's samples are split into train/test (``test_fraction``); the global test set is the
    union of the device test sets. alpha and beta are standard deviations, as in the FedProx code.
    """
    counts = synthetic_counts(num_clients, rng, size_mean, size_sigma, min_size)
    cuts = np.array([round((1.0 - test_fraction) * int(n)) for n in counts], dtype=np.int64)
    train_x = np.empty((int(cuts.sum()), dim), dtype=np.float32)
    test_x = np.empty((int((counts - cuts).sum()), dim), dtype=np.float32)
    train_y = np.empty(len(train_x), dtype=np.int64)
    test_y = np.empty(len(test_x), dtype=np.int64)
    sd = _feature_sd(dim)
    natural_train, natural_test = [], []
    n_train = n_test = 0
    for k in range(num_clients):
        x, y = synthetic_device(rng, int(counts[k]), alpha, beta, sd, num_classes)
        cut, rest = int(cuts[k]), int(counts[k] - cuts[k])
        train_x[n_train : n_train + cut] = x[:cut]
        train_y[n_train : n_train + cut] = y[:cut]
        test_x[n_test : n_test + rest] = x[cut:]
        test_y[n_test : n_test + rest] = y[cut:]
        natural_train.append(np.arange(n_train, n_train + cut))
        natural_test.append(np.arange(n_test, n_test + rest))
        n_train += cut
        n_test += rest

    def as_dataset(x_all: np.ndarray, y_all: np.ndarray) -> ArrayDataset:
        return ArrayDataset(torch.from_numpy(x_all), torch.from_numpy(y_all), num_classes)

    return DataBundle(
        "synthetic",
        as_dataset(train_x, train_y),
        as_dataset(test_x, test_y),
        natural_train,
        natural_test,
    )


class SyntheticClients:
    """LEAF Synthetic(alpha, beta) for ``num_clients`` devices, each generated on demand from its
    own stream ``default_rng([root, k])``: the same device always has the same samples, whatever
    was asked before. The sample counts (and ``root``) are drawn from ``rng`` up front; each device
    keeps its first ``1 - test_fraction`` of samples for training (``data``) and the rest for
    testing (``test_data``). A ``ClientData`` (fedtempo.data.clients)."""

    def __init__(
        self,
        alpha: float,
        beta: float,
        num_clients: int,
        rng: np.random.Generator,
        *,
        dim: int = 60,
        num_classes: int = 10,
        size_mean: float = 4.0,
        size_sigma: float = 2.0,
        min_size: int = 50,
        test_fraction: float = 0.2,
    ) -> None:
        if num_clients < 1:
            raise DataError(f"synthetic: num_clients must be at least 1, got {num_clients}")
        if not 0.0 <= test_fraction < 1.0:
            raise DataError(f"synthetic: test_fraction must be in [0, 1), got {test_fraction}")
        counts = synthetic_counts(num_clients, rng, size_mean, size_sigma, min_size)
        if int(counts.max()) >= 2**31:
            raise DataError(f"synthetic: a device of {int(counts.max())} samples is too large")
        self.counts = counts.astype(np.int32)
        self.cuts = np.rint((1.0 - test_fraction) * counts).astype(np.int32)
        self.root = int(rng.integers(2**63))
        self.alpha, self.beta, self.num_classes = alpha, beta, num_classes
        self.sd = _feature_sd(dim)

    def __len__(self) -> int:
        return len(self.counts)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (len(self.sd),)

    def device(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """All of device ``k``'s samples: float32 features and int64 labels."""
        rng = np.random.default_rng([self.root, k])
        x, y = synthetic_device(
            rng, int(self.counts[k]), self.alpha, self.beta, self.sd, self.num_classes
        )
        return x.astype(np.float32), y

    def num_samples(self, client: int) -> int:
        return int(self.cuts[client])

    def data(self, client: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.device(client)
        cut = int(self.cuts[client])
        return torch.from_numpy(x[:cut]), torch.from_numpy(y[:cut])

    def test_data(self, clients: Sequence[int]) -> ArrayDataset:
        """The test samples of ``clients``, as one data set (an evaluation sample: the union
        over every device of a million is more than memory holds)."""
        xs, ys = [], []
        for k in clients:
            x, y = self.device(k)
            xs.append(x[int(self.cuts[k]) :])
            ys.append(y[int(self.cuts[k]) :])
        x_all = np.concatenate(xs) if xs else np.empty((0, len(self.sd)), np.float32)
        y_all = np.concatenate(ys) if ys else np.empty(0, np.int64)
        return ArrayDataset(torch.from_numpy(x_all), torch.from_numpy(y_all), self.num_classes)

    def share_memory(self) -> None:
        return None  # two small arrays: they are copied to each worker once

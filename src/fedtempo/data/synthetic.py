"""LEAF Synthetic(alpha, beta): the naturally federated data set of FedProx (Li et al., 2020).

Device k: u_k ~ N(0, alpha), W_k ~ N(u_k, 1) (classes x dim), b_k ~ N(u_k, 1); B_k ~ N(0, beta),
v_k ~ N(B_k, 1) (dim); features x ~ N(v_k, Sigma), Sigma = diag(j^-1.2); label argmax(W_k x + b_k)
(softmax is monotone, so the argmax of the logits is the same). Sample counts follow a power law:
floor(lognormal(size_mean, size_sigma)) + min_size, as in the FedProx generator.
"""

from __future__ import annotations

import numpy as np
import torch

from fedtempo.data.datasets import ArrayDataset, DataBundle


def synthetic_counts(
    num_clients: int, rng: np.random.Generator, size_mean: float, size_sigma: float, min_size: int
) -> np.ndarray:
    """Power-law (lognormal) sample counts per device."""
    return rng.lognormal(size_mean, size_sigma, num_clients).astype(np.int64) + min_size


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
    sd = np.sqrt(np.arange(1, dim + 1, dtype=np.float64) ** -1.2)
    natural_train, natural_test = [], []
    n_train = n_test = 0
    for k in range(num_clients):
        u_k = rng.normal(0.0, alpha) if alpha > 0 else 0.0
        big_b = rng.normal(0.0, beta) if beta > 0 else 0.0
        w = rng.normal(u_k, 1.0, (num_classes, dim))
        b = rng.normal(u_k, 1.0, num_classes)
        v = rng.normal(big_b, 1.0, dim)
        x = v + rng.standard_normal((int(counts[k]), dim)) * sd
        y = np.argmax(x @ w.T + b, axis=1)
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

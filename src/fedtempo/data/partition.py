"""Partitioners: split a data set's sample indices among clients, deterministically by seed.

Each returns a list (one entry per client) of sorted int64 index arrays; every index appears in
exactly one client. Errors for impossible partitions are PartitionError with a one-line reason.
"""

from __future__ import annotations

import numpy as np

from fedtempo.errors import PartitionError


def _check_clients(num_samples: int, num_clients: int) -> None:
    if num_clients < 1:
        raise PartitionError(f"num_clients must be >= 1, got {num_clients}")
    if num_clients > num_samples:
        raise PartitionError(
            f"cannot split {num_samples} samples among {num_clients} clients "
            "(more clients than samples)"
        )


def iid(num_samples: int, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Uniformly random, equal-size (to within one sample) split."""
    _check_clients(num_samples, num_clients)
    order = rng.permutation(num_samples)
    return [np.sort(part) for part in np.array_split(order, num_clients)]


def dirichlet(labels: np.ndarray, num_clients: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Dirichlet(alpha) label skew, exactly the procedure of BENCHMARKS.md.

    One ``Generator(PCG64(seed))``; for each class in increasing order: shuffle that class's
    indices, draw proportions ~ Dirichlet(alpha * ones(N)), split the shuffled indices at the
    cumulative proportions. A client may receive no sample of a class (or none at all when N is
    large and alpha small).
    """
    if not alpha > 0:
        raise PartitionError(f"partition.alpha must be > 0 for the Dirichlet split, got {alpha}")
    labels = np.asarray(labels)
    _check_clients(len(labels), num_clients)
    rng = np.random.Generator(np.random.PCG64(seed))
    chunks: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        proportions = rng.dirichlet(alpha * np.ones(num_clients))
        cuts = (np.cumsum(proportions) * len(idx)).astype(np.int64)[:-1]
        for client, part in enumerate(np.split(idx, cuts)):
            chunks[client].append(part)
    return [np.sort(np.concatenate(c)).astype(np.int64) for c in chunks]


def shards(
    labels: np.ndarray, num_clients: int, shards_per_client: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Pathological non-IID split (McMahan et al. 2017): sort by label, cut into
    ``num_clients * shards_per_client`` equal shards, give each client ``shards_per_client`` of
    them at random. Each client then holds at most ``shards_per_client`` classes (usually exactly).
    """
    if shards_per_client < 1:
        raise PartitionError(f"partition.shards_per_client must be >= 1, got {shards_per_client}")
    labels = np.asarray(labels)
    n_shards = num_clients * shards_per_client
    _check_clients(len(labels), num_clients)
    if n_shards > len(labels):
        raise PartitionError(f"cannot cut {len(labels)} samples into {n_shards} shards")
    by_label = np.argsort(labels, kind="stable")
    pieces = np.array_split(by_label, n_shards)
    assignment = rng.permutation(n_shards).reshape(num_clients, shards_per_client)
    return [np.sort(np.concatenate([pieces[s] for s in row])) for row in assignment]


def power_law(
    num_samples: int, num_clients: int, sigma: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """IID labels, client sizes from a lognormal(0, sigma) law (heavy-tailed), each >= 1 sample."""
    _check_clients(num_samples, num_clients)
    if not sigma > 0:
        raise PartitionError(f"partition.sigma must be > 0 for power-law sizes, got {sigma}")
    weights = rng.lognormal(0.0, sigma, num_clients)
    spare = num_samples - num_clients
    sizes = 1 + np.floor(weights / weights.sum() * spare).astype(np.int64)
    # Hand out the samples lost to flooring, largest remainders first (deterministic).
    remainder = weights / weights.sum() * spare - np.floor(weights / weights.sum() * spare)
    for client in np.argsort(-remainder, kind="stable")[: num_samples - int(sizes.sum())]:
        sizes[client] += 1
    order = rng.permutation(num_samples)
    return [np.sort(part) for part in np.split(order, np.cumsum(sizes)[:-1])]


def split_clients(
    parts: list[np.ndarray], test_fraction: float, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Split each client's indices into (train, test) for personalized evaluation.

    Each client keeps at least one training sample when it has any; test gets
    round(test_fraction * size) of them.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise PartitionError(f"client_test_fraction must be in [0, 1), got {test_fraction}")
    train, test = [], []
    for part in parts:
        shuffled = rng.permutation(part)
        n_test = min(round(test_fraction * len(part)), max(len(part) - 1, 0))
        test.append(np.sort(shuffled[:n_test]))
        train.append(np.sort(shuffled[n_test:]))
    return train, test

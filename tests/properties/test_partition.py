"""Partition properties: every index exactly once, determinism by seed, exact procedures."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtempo.data import partition as part
from fedtempo.errors import PartitionError

sizes = st.integers(min_value=20, max_value=400)
clients = st.integers(min_value=1, max_value=20)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


def _labels(n: int, seed: int, classes: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, n)


def _assert_exact_cover(parts: list[np.ndarray], n: int, k: int) -> None:
    assert len(parts) == k
    joined = np.concatenate(parts)
    assert np.array_equal(np.sort(joined), np.arange(n))
    for p in parts:
        assert np.array_equal(p, np.sort(p))


@given(sizes, clients, seeds)
def test_iid_cover_and_balance(n: int, k: int, seed: int) -> None:
    parts = part.iid(n, k, np.random.default_rng(seed))
    _assert_exact_cover(parts, n, k)
    lens = [len(p) for p in parts]
    assert max(lens) - min(lens) <= 1


@given(sizes, clients, seeds, st.floats(0.05, 10.0))
@settings(max_examples=60)
def test_dirichlet_cover_and_determinism(n: int, k: int, seed: int, alpha: float) -> None:
    labels = _labels(n, seed)
    parts = part.dirichlet(labels, k, alpha, seed)
    _assert_exact_cover(parts, n, k)
    again = part.dirichlet(labels, k, alpha, seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_dirichlet_follows_the_benchmark_procedure() -> None:
    labels = _labels(300, 3, classes=4)
    parts = part.dirichlet(labels, 6, 0.5, seed=11)
    rng = np.random.Generator(np.random.PCG64(11))
    for cls in range(4):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        props = rng.dirichlet(0.5 * np.ones(6))
        bounds = np.concatenate([[0], (np.cumsum(props) * len(idx)).astype(int)[:-1], [len(idx)]])
        for client in range(6):
            expected = set(idx[bounds[client] : bounds[client + 1]].tolist())
            got = {int(i) for i in parts[client] if labels[i] == cls}
            assert got == expected


def test_dirichlet_small_alpha_skews_labels() -> None:
    labels = _labels(2000, 0, classes=10)
    skewed = part.dirichlet(labels, 10, 0.05, 0)
    mixed = part.dirichlet(labels, 10, 100.0, 0)

    def mean_classes(parts: list[np.ndarray]) -> float:
        return float(np.mean([len(np.unique(labels[p])) for p in parts if len(p)]))

    assert mean_classes(skewed) < mean_classes(mixed)


@given(st.integers(10, 30), st.integers(1, 3), seeds)
def test_shards_cover_and_class_limit(k: int, per: int, seed: int) -> None:
    labels = np.repeat(np.arange(10), 60)
    parts = part.shards(labels, k, per, np.random.default_rng(seed))
    _assert_exact_cover(parts, 600, k)
    # A shard spans at most two classes when shards are smaller than a class.
    for p in parts:
        assert len(np.unique(labels[p])) <= 2 * per


@given(sizes, clients, seeds, st.floats(0.1, 3.0))
def test_power_law_cover(n: int, k: int, seed: int, sigma: float) -> None:
    parts = part.power_law(n, k, sigma, np.random.default_rng(seed))
    _assert_exact_cover(parts, n, k)
    assert min(len(p) for p in parts) >= 1


def test_power_law_is_heavy_tailed() -> None:
    parts = part.power_law(20000, 100, 1.5, np.random.default_rng(0))
    lens = np.array([len(p) for p in parts])
    assert lens.max() > 5 * np.median(lens)


@given(st.lists(st.integers(1, 40), min_size=1, max_size=10), seeds)
def test_client_split_partitions_each_client(lens: list[int], seed: int) -> None:
    offsets = np.cumsum([0, *lens])
    parts = [np.arange(offsets[i], offsets[i + 1]) for i in range(len(lens))]
    train, test = part.split_clients(parts, 0.25, np.random.default_rng(seed))
    for p, tr, te in zip(parts, train, test, strict=True):
        assert np.array_equal(np.sort(np.concatenate([tr, te])), p)
        assert len(tr) >= 1
        assert len(te) == min(round(0.25 * len(p)), len(p) - 1)


def test_impossible_partitions_are_one_line_errors() -> None:
    labels = _labels(10, 0)
    with pytest.raises(PartitionError, match="more clients than samples"):
        part.dirichlet(labels, 11, 0.5, 0)
    with pytest.raises(PartitionError, match="alpha must be > 0"):
        part.dirichlet(labels, 2, 0.0, 0)
    with pytest.raises(PartitionError, match="more clients than samples"):
        part.iid(5, 6, np.random.default_rng(0))
    with pytest.raises(PartitionError, match="shards"):
        part.shards(labels, 4, 3, np.random.default_rng(0))
    with pytest.raises(PartitionError, match="client_test_fraction"):
        part.split_clients([np.arange(3)], 1.0, np.random.default_rng(0))

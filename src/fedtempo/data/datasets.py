"""In-memory data sets as tensors, and the loaders of the data sets fedtempo knows.

A data set is held once, as one float32 feature tensor and one int64 label tensor; clients see it
through index arrays (no per-client copies).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fedtempo.data.idx import read_idx
from fedtempo.data.sources import locate
from fedtempo.errors import DataError

# Per-dataset (mean, std) of pixels scaled to [0, 1].
_NORMALISATION = {"mnist": (0.1307, 0.3081), "fashion-mnist": (0.2860, 0.3530)}


@dataclass(frozen=True)
class ArrayDataset:
    """Features ``x`` (float32, N x feature shape) and labels ``y`` (int64, N)."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise DataError(f"{self.x.shape[0]} feature rows but {self.y.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])


@dataclass(frozen=True)
class DataBundle:
    """A training set, a global test set and, for naturally federated data, the client split.

    ``natural_train``/``natural_test`` hold per-client index arrays into ``train``/``test`` when the
    data set defines its own clients (LEAF Synthetic); they are empty otherwise.
    """

    name: str
    train: ArrayDataset
    test: ArrayDataset
    natural_train: list[np.ndarray] = field(default_factory=list)
    natural_test: list[np.ndarray] = field(default_factory=list)


def load_idx_pair(name: str, root: Path | None = None) -> DataBundle:
    """Load MNIST or Fashion-MNIST (gzip IDX files), scaled to [0,1] and normalised."""
    paths = locate(name, root)
    mean, std = _NORMALISATION[name]
    parts = {}
    for split in ("train", "test"):
        images = read_idx(paths[f"{split}_images"], expected_ndim=3)
        labels = read_idx(paths[f"{split}_labels"], expected_ndim=1)
        if images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{paths[f'{split}_images']}: {images.shape[0]} images but "
                f"{paths[f'{split}_labels']} has {labels.shape[0]} labels"
            )
        if labels.size and int(labels.max()) > 9:
            raise DataError(f"{paths[f'{split}_labels']}: label {int(labels.max())} outside 0..9")
        # One float32 allocation, normalised in place (MNIST: 188 MB, not four times that).
        x = torch.from_numpy(images.astype(np.float32))
        x.div_(255.0).sub_(mean).div_(std)
        x = x.unsqueeze(1)
        parts[split] = ArrayDataset(x, torch.from_numpy(labels.astype(np.int64)), 10)
    return DataBundle(name, parts["train"], parts["test"])


def load_digits(test_fraction: float, rng: np.random.Generator) -> DataBundle:
    """scikit-learn's 8x8 digits (1,797 images, offline), split into train/test by ``rng``."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / 16.0
    images = (images - images.mean()) / images.std()
    labels = np.asarray(bunch.target, dtype=np.int64)
    order = rng.permutation(len(labels))
    n_test = round(test_fraction * len(labels))
    test_idx, train_idx = np.sort(order[:n_test]), np.sort(order[n_test:])
    x = torch.from_numpy(images).unsqueeze(1)
    y = torch.from_numpy(labels)
    return DataBundle(
        "digits",
        ArrayDataset(x[train_idx], y[train_idx], 10),
        ArrayDataset(x[test_idx], y[test_idx], 10),
    )

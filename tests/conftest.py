"""Shared test fixtures. No test uses the network."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def shared_mnist() -> Path:
    if not (SHARED_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("../shared/data/mnist not present")
    return SHARED_MNIST


@pytest.fixture(autouse=True)
def _no_env_data(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests choose their data paths explicitly; a user's FEDTEMPO_DATA must not leak in.
    monkeypatch.delenv("FEDTEMPO_DATA", raising=False)

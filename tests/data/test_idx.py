import gzip
from pathlib import Path

import numpy as np
import pytest

from fedtempo.data.datasets import load_idx_pair
from fedtempo.data.idx import read_idx, write_idx
from fedtempo.data.sources import IDX_DATASETS, locate, verify
from fedtempo.errors import DataError


def _write_fake_mnist(folder: Path, n_train: int = 50, n_test: int = 20) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    names = {role: fname for role, (fname, _) in IDX_DATASETS["mnist"].files.items()}
    write_idx(folder / names["train_images"], rng.integers(0, 256, (n_train, 28, 28)))
    write_idx(folder / names["train_labels"], rng.integers(0, 10, n_train))
    write_idx(folder / names["test_images"], rng.integers(0, 256, (n_test, 28, 28)))
    write_idx(folder / names["test_labels"], rng.integers(0, 10, n_test))


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_roundtrip(tmp_path: Path, suffix: str) -> None:
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / f"a{suffix}", arr)
    assert np.array_equal(read_idx(tmp_path / f"a{suffix}", expected_ndim=3), arr)


def test_bad_magic_is_named(tmp_path: Path) -> None:
    p = tmp_path / "bad.gz"
    p.write_bytes(gzip.compress(b"\x12\x34\x08\x01" + b"\x00" * 8))
    with pytest.raises(DataError, match=r"bad\.gz: bad IDX magic"):
        read_idx(p)


def test_wrong_size_is_named(tmp_path: Path) -> None:
    p = tmp_path / "short.gz"
    write_idx(p, np.zeros((4, 5), dtype=np.uint8))
    raw = gzip.decompress(p.read_bytes())[:-3]
    p.write_bytes(gzip.compress(raw))
    with pytest.raises(DataError, match=r"short\.gz: wrong size"):
        read_idx(p)


def test_not_gzip_is_named(tmp_path: Path) -> None:
    p = tmp_path / "x.gz"
    p.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"x\.gz: cannot read"):
        read_idx(p)


def test_wrong_ndim(tmp_path: Path) -> None:
    p = tmp_path / "l.gz"
    write_idx(p, np.zeros(5, dtype=np.uint8))
    with pytest.raises(DataError, match="1 dimensions, expected 3"):
        read_idx(p, expected_ndim=3)


def test_loader_on_generated_files(tmp_path: Path) -> None:
    _write_fake_mnist(tmp_path / "mnist")
    bundle = load_idx_pair("mnist", tmp_path)
    assert bundle.train.x.shape == (50, 1, 28, 28) and len(bundle.test) == 20
    assert bundle.train.y.dtype.is_floating_point is False


def test_env_variable_is_searched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_fake_mnist(tmp_path / "elsewhere")
    monkeypatch.setenv("FEDTEMPO_DATA", str(tmp_path / "elsewhere"))
    assert locate("mnist")["train_images"].parent == tmp_path / "elsewhere"


def test_missing_data_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as info:
        locate("mnist", tmp_path / "nowhere")
    msg = str(info.value)
    assert "nowhere" in msg and "fedtempo data download mnist" in msg


def test_label_count_mismatch(tmp_path: Path) -> None:
    _write_fake_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(3, dtype=np.uint8))
    with pytest.raises(DataError, match="20 images but"):
        load_idx_pair("mnist", tmp_path)


def test_checksum_mismatch_is_named(tmp_path: Path) -> None:
    p = tmp_path / "f.gz"
    write_idx(p, np.zeros(3, dtype=np.uint8))
    with pytest.raises(DataError, match=r"f\.gz: checksum mismatch"):
        verify(p, "0" * 64)


def test_shared_mnist_loads_and_verifies(shared_mnist: Path) -> None:
    for role, (fname, sha) in IDX_DATASETS["mnist"].files.items():
        verify(shared_mnist / fname, sha)
        assert role
    bundle = load_idx_pair("mnist", shared_mnist)
    assert bundle.train.x.shape == (60000, 1, 28, 28) and len(bundle.test) == 10000
    assert abs(float(bundle.train.x.mean())) < 0.01  # normalised with MNIST mean/std
    assert abs(float(bundle.train.x.std()) - 1.0) < 0.01

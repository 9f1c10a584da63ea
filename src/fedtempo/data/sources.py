"""Where IDX data sets live on disk, and the explicit, verified download for online users.

Search order for a data set's files (first directory holding all four files wins):
1. the ``root`` given in the config (the directory itself, or ``root/<dataset>``); when a root is
   given, nothing else is searched: a wrong path is an error, never a silent switch of data;
2. the ``FEDTEMPO_DATA`` environment variable (same two forms);
3. ``../shared/data`` seen from the working directory or from the source checkout;
4. for Fashion-MNIST, Debian's ``dataset-fashion-mnist`` package (/usr/share/datasets).

Downloads never happen implicitly: ``download()`` (``fedtempo data download``) is opt-in, and every
file is checked against the SHA-256 of its *decompressed* IDX content, which stays the same when a
mirror recompresses the gzip files.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from fedtempo.errors import DataError

ENV_VAR = "FEDTEMPO_DATA"


@dataclass(frozen=True)
class IdxDataset:
    """The four files of an IDX data set, with digests of their decompressed content."""

    name: str
    files: dict[str, tuple[str, str]]  # role -> (file name, sha256 of decompressed bytes)
    mirrors: tuple[str, ...]
    extra_dirs: tuple[str, ...] = ()


IDX_DATASETS: dict[str, IdxDataset] = {
    "mnist": IdxDataset(
        name="mnist",
        files={
            "train_images": (
                "train-images-idx3-ubyte.gz",
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            ),
            "train_labels": (
                "train-labels-idx1-ubyte.gz",
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            ),
            "test_images": (
                "t10k-images-idx3-ubyte.gz",
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            ),
            "test_labels": (
                "t10k-labels-idx1-ubyte.gz",
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            ),
        },
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",),
    ),
    "fashion-mnist": IdxDataset(
        name="fashion-mnist",
        files={
            "train_images": (
                "train-images-idx3-ubyte.gz",
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            ),
            "train_labels": (
                "train-labels-idx1-ubyte.gz",
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            ),
            "test_images": (
                "t10k-images-idx3-ubyte.gz",
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            ),
            "test_labels": (
                "t10k-labels-idx1-ubyte.gz",
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            ),
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        extra_dirs=("/usr/share/datasets/fashion-mnist",),
    ),
}


def data_roots(root: Path | None = None) -> list[Path]:
    """Base directories searched for data, in order (see the module docstring)."""
    if root is not None:
        return [Path(root)]
    bases: list[Path] = []
    if os.environ.get(ENV_VAR):
        bases.append(Path(os.environ[ENV_VAR]))
    bases.append(Path.cwd().parent / "shared" / "data")
    bases.append(Path(__file__).resolve().parents[4] / "shared" / "data")
    return list(dict.fromkeys(bases))


def find_path(relative: str, root: Path | None = None) -> Path:
    """Resolve a data path: absolute or existing paths as given, else under each data root.

    Used for traces (``traces/bandwidth/fcc``). Raises DataError listing where it looked.
    """
    direct = Path(relative).expanduser()
    if direct.is_absolute() or direct.exists():
        if direct.exists():
            return direct
        raise DataError(f"{direct}: not found")
    searched = [base / relative for base in data_roots(root)]
    for candidate in searched:
        if candidate.exists():
            return candidate
    where = ", ".join(str(c) for c in searched)
    raise DataError(f"{relative}: not found (looked in: {where}); set {ENV_VAR} or give a path")


def _candidate_dirs(spec: IdxDataset, root: Path | None) -> list[Path]:
    dirs: list[Path] = []
    for base in data_roots(root):
        dirs.extend([base, base / spec.name, base / spec.name.replace("-", "_")])
    if root is None:
        dirs.extend(Path(d) for d in spec.extra_dirs)
    return list(dict.fromkeys(dirs))


def locate(name: str, root: Path | None = None) -> dict[str, Path]:
    """Paths of the four files of IDX data set ``name`` (role -> path).

    Raises DataError listing every directory searched and how to get the data.
    """
    spec = IDX_DATASETS[name]
    searched = _candidate_dirs(spec, root)
    for directory in searched:
        paths = {role: directory / fname for role, (fname, _) in spec.files.items()}
        if all(p.is_file() for p in paths.values()):
            return paths
    where = ", ".join(str(d) for d in searched)
    raise DataError(
        f"{name}: data files not found (looked in: {where}). Put the four gzip IDX files in one of "
        f"these, set {ENV_VAR} or data.root, or run `fedtempo data download {name} DIR`."
    )


def verify(path: Path, sha256: str) -> None:
    """Check the SHA-256 of the decompressed content of ``path``; DataError naming it if not."""
    try:
        content = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: not a readable gzip file ({exc})") from None
    digest = hashlib.sha256(content).hexdigest()
    if digest != sha256:
        raise DataError(f"{path}: checksum mismatch (sha256 {digest}, expected {sha256})")


def download(name: str, dest: Path, timeout_s: float = 60.0) -> dict[str, Path]:
    """Download IDX data set ``name`` into ``dest`` from its public mirrors, verifying each file.

    Opt-in only (needs a network); never called by the simulator or the tests. A file that is
    already present and verifies is not fetched again. A failed check deletes the file.
    """
    spec = IDX_DATASETS[name]
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for role, (fname, sha) in spec.files.items():
        target = dest / fname
        if target.is_file():
            try:
                verify(target, sha)
                out[role] = target
                continue
            except DataError:
                target.unlink()
        errors = []
        for mirror in spec.mirrors:
            try:
                with urllib.request.urlopen(mirror + fname, timeout=timeout_s) as resp:
                    target.write_bytes(resp.read())
                verify(target, sha)
                break
            except (OSError, DataError) as exc:
                errors.append(f"{mirror}{fname}: {exc}")
                target.unlink(missing_ok=True)
        else:
            raise DataError(f"{name}: download failed: " + "; ".join(errors))
        out[role] = target
    return out

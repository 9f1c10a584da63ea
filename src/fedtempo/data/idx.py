"""Reading and writing IDX files (the MNIST / Fashion-MNIST format), gzip-compressed or raw.

Format: big-endian; two zero bytes, a type code (0x08 = uint8), the number of dimensions, then
each dimension as uint32, then the data. MNIST images have magic 0x00000803, labels 0x00000801.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from fedtempo.errors import DataError

_UINT8 = 0x08


def read_idx(path: Path, expected_ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into a uint8 array of its declared shape.

    Raises DataError naming the file on a bad magic number, an unsupported type, a wrong number of
    dimensions, or a payload whose size does not match the header.
    """
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot read IDX file ({exc})") from None
    if len(raw) < 4:
        raise DataError(f"{path}: file too short for an IDX header ({len(raw)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != _UINT8 or not 1 <= ndim <= 4:
        raise DataError(
            f"{path}: bad IDX magic number 0x{int.from_bytes(raw[:4], 'big'):08x} "
            f"(expected 0x0000080N for unsigned bytes with N dimensions)"
        )
    if expected_ndim is not None and ndim != expected_ndim:
        raise DataError(f"{path}: IDX file has {ndim} dimensions, expected {expected_ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(">" + "I" * ndim, raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: wrong size: header declares shape {shape} ({expected} bytes of data), "
            f"file holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file, gzip-compressed when ``path`` ends in ``.gz``."""
    arr = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, _UINT8, arr.ndim)
    header += struct.pack(">" + "I" * arr.ndim, *arr.shape)
    payload = header + arr.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(payload, mtime=0) if path.suffix == ".gz" else payload)

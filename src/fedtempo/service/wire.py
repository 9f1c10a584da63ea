"""Tensors on the wire and on disk: safetensors only, parsed with limits before anything else.

A model travels as one safetensors file whose tensors are the model's named parameters (in
``parameters()`` order, so the flat vector of ``fedtempo.params`` is their concatenation). An
update carries its envelope (task, base version, samples, steps, loss) in the file's
``__metadata__``. ``parse`` checks the header itself (size, dtype allow-list, names, shapes,
offsets that tile the buffer exactly) before the safetensors library touches the bytes.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from fedtempo.params import is_finite

MAX_HEADER = 1 << 20  # bytes of safetensors JSON header we are willing to parse
DTYPES = {"F32": 4}  # the allow-list: models are float32 vectors (fedtempo.params)


class WireError(ValueError):
    """A payload that does not match what the job expects; the message is the reason and
    ``code`` its category (a short, bounded label for counting)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True)
class Layout:
    """A model's tensors as (name, shape), in ``parameters()`` order."""

    tensors: tuple[tuple[str, tuple[int, ...]], ...]

    @staticmethod
    def of(model: nn.Module) -> Layout:
        return Layout(tuple((n, tuple(p.shape)) for n, p in model.named_parameters()))

    @property
    def numel(self) -> int:
        return sum(math.prod(s) for _, s in self.tensors)

    @property
    def max_bytes(self) -> int:
        """The largest body a valid payload of this layout can have (header included)."""
        return 4 * self.numel + MAX_HEADER + 8

    def to_json(self) -> list[list[object]]:
        return [[n, list(s)] for n, s in self.tensors]

    @staticmethod
    def from_json(data: list[list[object]]) -> Layout:
        return Layout(tuple((str(n), tuple(int(d) for d in s)) for n, s in data))  # type: ignore[attr-defined]


def encode(
    layout: Layout, vector: torch.Tensor, metadata: Mapping[str, str] | None = None
) -> bytes:
    """The safetensors bytes of a flat float32 ``vector`` laid out as ``layout``."""
    if vector.ndim != 1 or vector.numel() != layout.numel:
        raise WireError(
            "wrong shape", f"vector of shape {tuple(vector.shape)} does not fit the model"
        )
    tensors: dict[str, torch.Tensor] = {}
    offset = 0
    flat = vector.detach().to(torch.float32).contiguous()
    for name, shape in layout.tensors:
        n = math.prod(shape)
        tensors[name] = flat[offset : offset + n].reshape(shape).clone()
        offset += n
    return bytes(st_save(tensors, metadata=dict(metadata) if metadata else None))


def _header(body: bytes) -> tuple[dict[str, object], int]:
    if len(body) < 8:
        raise WireError("truncated payload", "truncated safetensors: fewer than 8 bytes")
    (size,) = struct.unpack("<Q", body[:8])
    if size > MAX_HEADER:
        raise WireError(
            "header too large", f"safetensors header of {size} bytes exceeds the {MAX_HEADER} limit"
        )
    if 8 + size > len(body):
        raise WireError("truncated payload", "truncated safetensors: header runs past the body")
    try:
        header = json.loads(body[8 : 8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WireError("malformed payload", "malformed safetensors header: not JSON") from None
    if not isinstance(header, dict):
        raise WireError("malformed payload", "malformed safetensors header: not an object")
    return header, len(body) - 8 - size


def parse(layout: Layout, body: bytes) -> tuple[torch.Tensor, dict[str, str]]:
    """The flat vector and metadata of a payload, or WireError naming what is wrong."""
    header, data_len = _header(body)
    meta = header.pop("__metadata__", {}) or {}
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise WireError(
            "malformed payload", "malformed safetensors metadata: must map strings to strings"
        )
    want = dict(layout.tensors)
    if set(header) != set(want):
        missing, extra = sorted(set(want) - set(header)), sorted(set(header) - set(want))
        raise WireError(
            "wrong tensor names",
            f"tensor names differ from the model's (missing {missing}, extra {extra})",
        )
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise WireError("malformed payload", f"tensor {name!r}: malformed entry")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in DTYPES:
            raise WireError(
                "wrong dtype", f"tensor {name!r}: dtype {dtype!r} not allowed (allowed: F32)"
            )
        if not isinstance(shape, list) or tuple(shape) != want[name]:
            raise WireError(
                "wrong shape",
                f"tensor {name!r}: shape {shape} differs from the model's {list(want[name])}",
            )
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
            or offsets[1] - offsets[0] != DTYPES[dtype] * math.prod(want[name])
        ):
            raise WireError(
                "bad offsets", f"tensor {name!r}: data offsets {offsets} do not match its shape"
            )
        spans.append((offsets[0], offsets[1]))
    spans.sort()
    end = 0
    for start, stop in spans:
        if start != end:
            raise WireError("bad offsets", "tensor data offsets overlap or leave gaps")
        end = stop
    if end != data_len:
        raise WireError(
            "bad offsets", f"tensor data is {data_len} bytes, the header describes {end}"
        )
    try:
        tensors = st_load(body)
    except Exception as exc:  # the library's own checks, after ours
        raise WireError("malformed payload", f"malformed safetensors: {exc}") from None
    vector = torch.cat([tensors[n].reshape(-1) for n, _ in layout.tensors])
    if not is_finite(vector):
        raise WireError("non-finite values", "non-finite values (NaN or Inf)")
    return vector, dict(meta)

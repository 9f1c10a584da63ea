"""Where a trainer finds client k's training samples.

- ``IndexedClients``: one data set in memory; each client is a view of it, by a slice where its
  indices are contiguous (16 bytes, no gather) or by an index tensor.
- ``synthetic.SyntheticClients``: LEAF Synthetic generated per device, from the device's own
  random stream, when the device trains; memory holds the device being trained and two counts
  per device.

Both satisfy ``ClientData``; a ``ClientTrainer`` takes either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch

Indices = torch.Tensor | slice


@runtime_checkable
class ClientData(Protocol):
    """Per-client training data: how many clients, each one's sample count and samples."""

    def __len__(self) -> int: ...

    def num_samples(self, client: int) -> int: ...

    def data(self, client: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``client``'s features (float32) and labels (int64)."""
        ...

    def share_memory(self) -> None:
        """Make what is held cross to worker processes as shared memory, not copies."""
        ...


def compact(idx: np.ndarray) -> Indices:
    """A contiguous run of indices is kept as a slice (16 bytes and a view, not a gather)."""
    if len(idx) and int(idx[-1]) - int(idx[0]) + 1 == len(idx) and np.all(np.diff(idx) == 1):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    if len(idx) == 0:
        return slice(0, 0)
    return torch.from_numpy(idx)


class IndexedClients:
    """Clients as index views of one in-memory data set (``x``, ``y``)."""

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, client_indices: Sequence[np.ndarray]
    ) -> None:
        self.x, self.y = x, y
        self.client_indices = [compact(np.asarray(i, dtype=np.int64)) for i in client_indices]

    def __len__(self) -> int:
        return len(self.client_indices)

    def num_samples(self, client: int) -> int:
        idx = self.client_indices[client]
        return idx.stop - idx.start if isinstance(idx, slice) else int(idx.numel())

    def data(self, client: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.client_indices[client]
        return self.x[idx], self.y[idx]

    def share_memory(self) -> None:
        for tensor in (self.x, self.y, *self.client_indices):
            if isinstance(tensor, torch.Tensor) and not tensor.is_shared():  # type: ignore[no-untyped-call]
                tensor.share_memory_()  # type: ignore[no-untyped-call]

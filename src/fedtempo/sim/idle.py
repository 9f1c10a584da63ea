"""The idle clients of an asynchronous run: a set of client ids with order statistics.

A Fenwick (binary indexed) tree over the ids 0..n-1 counts the idle ones, so that taking the i-th
idle id in increasing order, adding and removing each cost O(log n) instead of a scan or a
list shift: a million clients cost nothing per dispatch. It reads as the sorted list of idle ids
(``len``, ``[i]``, iteration, ``in``), which is what the dispatch rules index and bisect.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import overload

import numpy as np


class IdleSet(Sequence[int]):
    def __init__(self, clients: Iterable[int], size: int) -> None:
        self._flag = bytearray(size)
        for c in clients:
            if not 0 <= c < size:
                raise ValueError(f"client {c} is outside 0..{size - 1}")
            self._flag[c] = 1
        self._count = sum(self._flag)
        tree = [0] * (size + 1)  # tree[i] counts the ids in (i - lowbit(i), i], 1-based
        for i in range(1, size + 1):
            tree[i] += self._flag[i - 1]
            j = i + (i & -i)
            if j <= size:
                tree[j] += tree[i]
        self._tree = tree
        self._top = 1 << (size.bit_length() - 1) if size else 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, client: object) -> bool:
        return isinstance(client, int) and 0 <= client < len(self._flag) and self._flag[client] == 1

    def __iter__(self) -> Iterator[int]:
        # (a scan in NumPy: an availability filter walks the idle clients on each dispatch)
        return iter(np.flatnonzero(np.frombuffer(self._flag, dtype=np.uint8)).tolist())

    def _bump(self, client: int, by: int) -> None:
        tree, i, n = self._tree, client + 1, len(self._flag)
        while i <= n:
            tree[i] += by
            i += i & -i

    def add(self, client: int) -> None:
        if self._flag[client]:
            raise ValueError(f"client {client} is idle already")
        self._flag[client] = 1
        self._count += 1
        self._bump(client, 1)

    def remove(self, client: int) -> None:
        if not self._flag[client]:
            raise ValueError(f"client {client} is not idle")
        self._flag[client] = 0
        self._count -= 1
        self._bump(client, -1)

    @overload
    def __getitem__(self, i: int) -> int: ...

    @overload
    def __getitem__(self, i: slice) -> list[int]: ...

    def __getitem__(self, i: int | slice) -> int | list[int]:
        """The ``i``-th idle id in increasing order (0-based; negative counts from the end)."""
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._count))]
        if i < 0:
            i += self._count
        if not 0 <= i < self._count:
            raise IndexError(f"idle index {i} out of range ({self._count} idle)")
        tree, n, pos, rest, step = self._tree, len(self._flag), 0, i + 1, self._top
        while step:
            nxt = pos + step
            if nxt <= n and tree[nxt] < rest:
                pos = nxt
                rest -= tree[nxt]
            step >>= 1
        return pos  # the 1-based position pos + 1 is client pos

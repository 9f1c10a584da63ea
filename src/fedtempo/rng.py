"""One root seed -> independent, reproducible random streams per (purpose, keys...).

Randomness in fedtempo is never global: every consumer asks for its own stream, named by a purpose
string and integer keys (client id, round, model version ...). The stream depends only on the root
seed and that name, so results do not depend on the order in which streams are requested, on
parallelism, or on how many other streams exist.
"""

from __future__ import annotations

import functools
import zlib

import numpy as np
import torch


@functools.lru_cache(maxsize=256)
def _purpose_key(purpose: str) -> int:
    # crc32 is stable across processes and Python versions (unlike hash(), which is salted).
    return zlib.crc32(purpose.encode("utf-8"))


class Streams:
    """Factory of named random generators derived from one root seed."""

    def __init__(self, seed: int) -> None:
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.seed = int(seed)

    def _sequence(self, purpose: str, keys: tuple[int, ...]) -> np.random.SeedSequence:
        ints = tuple(map(int, keys))  # (once per training and dispatch: kept cheap)
        if ints and min(ints) < 0:
            raise ValueError(f"stream keys must be >= 0, got {keys} for {purpose!r}")
        return np.random.SeedSequence(entropy=self.seed, spawn_key=(_purpose_key(purpose), *ints))

    def numpy(self, purpose: str, *keys: int) -> np.random.Generator:
        """A NumPy PCG64 generator for ``purpose`` and ``keys``."""
        return np.random.Generator(np.random.PCG64(self._sequence(purpose, keys)))

    def torch(self, purpose: str, *keys: int) -> torch.Generator:
        """A CPU torch generator for ``purpose`` and ``keys``."""
        state = self._sequence(purpose, keys).generate_state(2, dtype=np.uint32)
        gen = torch.Generator()
        gen.manual_seed(int(state[0]) << 32 | int(state[1]))
        return gen

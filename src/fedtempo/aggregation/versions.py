"""The server's store of global model versions still referenced by some client.

Only the current version and versions that a training client started from are kept; a version
is freed as soon as no client holds it (memory does not grow with the number of updates).
"""

from __future__ import annotations

import torch


class VersionStore:
    def __init__(self, params: torch.Tensor, version: int = 0) -> None:
        self.current = version
        self._params: dict[int, torch.Tensor] = {version: params}
        self._refs: dict[int, int] = {}

    @classmethod
    def restore(
        cls, current: int, params: dict[int, torch.Tensor], refs: dict[int, int]
    ) -> VersionStore:
        """A store rebuilt from durable state: version ``current`` and the referenced versions
        (``refs`` counts each one's holders); every version named must be in ``params``."""
        missing = ({current} | set(refs)) - set(params)
        if missing:
            raise ValueError(f"versions {sorted(missing)} are referenced but not given")
        store = cls(params[current], current)
        store._params = {v: params[v] for v in {current} | set(refs)}
        store._refs = {v: n for v, n in refs.items() if n > 0}
        return store

    def __contains__(self, version: int) -> bool:
        return version in self._params

    def __len__(self) -> int:
        return len(self._params)

    @property
    def latest(self) -> torch.Tensor:
        return self._params[self.current]

    def get(self, version: int) -> torch.Tensor:
        return self._params[version]

    def acquire(self) -> tuple[int, torch.Tensor]:
        """A client starts from the current version: reference it and return (version, params)."""
        self._refs[self.current] = self._refs.get(self.current, 0) + 1
        return self.current, self._params[self.current]

    def release(self, version: int) -> None:
        """A client's update from ``version`` was processed (or lost): drop one reference."""
        count = self._refs.get(version, 0) - 1
        if count < 0:
            raise ValueError(f"version {version} released more often than acquired")
        if count == 0:
            self._refs.pop(version, None)
            self._free(version)
        else:
            self._refs[version] = count

    def publish(self, params: torch.Tensor) -> int:
        """Make ``params`` the next current version; returns its number."""
        old = self.current
        self.current += 1
        self._params[self.current] = params
        self._free(old)
        return self.current

    def _free(self, version: int) -> None:
        if version != self.current and self._refs.get(version, 0) == 0:
            self._params.pop(version, None)

"""MA-FL scheduling tensors (SPEC section B) and their constraints.

For N devices, M models and T rounds: ``S[n, m, t] = 1`` when device n downloads model m and
starts a session at the start of round t; ``U[n, m, t] = 1`` when it uploads model m in round t
(the server applies what arrives at the end of that round);
``A[n, m, t] = sum_{t' <= t} S - sum_{t' < t} U`` marks the rounds a session is open. A schedule
covers rounds ``first_round .. first_round + T - 1`` (receding horizon); error messages name
rounds by their absolute number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedtempo.errors import FedTempoError


class ScheduleError(FedTempoError, ValueError):
    """A schedule breaks a constraint; the message names the device, model and round."""


@dataclass(frozen=True)
class Session:
    """One training session: device, model, start round, upload round (absolute numbers),
    SGD iterations (gamma) and mini-batch size (B)."""

    device: int
    model: int
    start: int
    upload: int
    iterations: int
    batch: int


@dataclass(frozen=True)
class Schedule:
    """S and U (bool, N x M x T) from ``first_round``; ``iterations`` and ``batch`` (N x M)
    are gamma_{n,m} and B_{n,m}."""

    starts: np.ndarray
    uploads: np.ndarray
    iterations: np.ndarray
    batch: np.ndarray
    first_round: int = 0

    @property
    def shape(self) -> tuple[int, int, int]:
        n, m, t = self.starts.shape
        return n, m, t

    def active(self) -> np.ndarray:
        """A (int, N x M x T): open sessions; values outside {0, 1} mean a broken schedule."""
        s = self.starts.astype(np.int64)
        u = self.uploads.astype(np.int64)
        return np.cumsum(s, axis=2) - (np.cumsum(u, axis=2) - u)

    def sessions(self) -> list[Session]:
        """The sessions, ordered by (start, device, model); a session still open at the end of
        the horizon is not listed (``validate`` refuses it)."""
        out = []
        n_dev, n_mod, _ = self.shape
        for n in range(n_dev):
            for m in range(n_mod):
                ups = list(np.flatnonzero(self.uploads[n, m]))
                for t in np.flatnonzero(self.starts[n, m]):
                    u = next((x for x in ups if x >= t), None)
                    if u is None:
                        continue
                    ups.remove(u)
                    out.append(
                        Session(
                            n,
                            m,
                            self.first_round + int(t),
                            self.first_round + int(u),
                            int(self.iterations[n, m]),
                            int(self.batch[n, m]),
                        )
                    )
        return sorted(out, key=lambda s: (s.start, s.device, s.model))


def empty_schedule(
    devices: int,
    models: int,
    horizon: int,
    first_round: int = 0,
    iterations: int = 1,
    batch: int = 1,
) -> Schedule:
    """A schedule with no session, every gamma and B set to the given values."""
    shape = (devices, models, horizon)
    return Schedule(
        np.zeros(shape, dtype=bool),
        np.zeros(shape, dtype=bool),
        np.full((devices, models), iterations, dtype=np.int64),
        np.full((devices, models), batch, dtype=np.int64),
        first_round,
    )


def _first(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(v) for v in np.argwhere(mask)[0])


def _check_tensors(s: Schedule) -> None:
    if s.starts.ndim != 3 or s.starts.shape != s.uploads.shape:
        raise ScheduleError(
            f"S and U must both be N x M x T, got {s.starts.shape} and {s.uploads.shape}"
        )
    n, m, _ = s.shape
    for name, arr in (("S", s.starts), ("U", s.uploads)):
        bad = ~np.isin(arr, (0, 1))
        if bad.any():
            d, k, t = _first(bad)
            value = arr[d, k, t].item()
            raise ScheduleError(
                f"{name}[device {d}, model {k}, round {s.first_round + t}] = {value!r}: "
                "scheduling entries must be 0 or 1"
            )
    for name, arr, lo in (("iterations", s.iterations, 1), ("batch", s.batch, 1)):
        if arr.shape != (n, m):
            raise ScheduleError(f"{name} must be N x M = {(n, m)}, got {arr.shape}")
        used = s.starts.any(axis=2) & (arr < lo)
        if used.any():
            d, k = _first(used)
            raise ScheduleError(
                f"device {d}, model {k}: {name} = {arr[d, k]} for a scheduled session "
                f"(must be >= {lo})"
            )


def _check_sessions(s: Schedule, a: np.ndarray) -> None:
    r0 = s.first_round
    opened = np.cumsum(s.starts.astype(np.int64), axis=2)
    closed = np.cumsum(s.uploads.astype(np.int64), axis=2)
    orphan = closed > opened
    if orphan.any():
        d, k, t = _first(orphan & s.uploads)
        raise ScheduleError(
            f"device {d} uploads model {k} in round {r0 + t} without an open session "
            "(upload only after download)"
        )
    if (a > 1).any():
        d, k, t = _first(a > 1)
        raise ScheduleError(
            f"device {d} starts model {k} in round {r0 + t} while its session of model {k} "
            "is still open"
        )
    still_open = opened[:, :, -1] > closed[:, :, -1]
    if still_open.any():
        d, k = _first(still_open)
        start = int(np.flatnonzero(s.starts[d, k])[-1])
        raise ScheduleError(
            f"device {d}'s session of model {k} from round {r0 + start} has no upload "
            f"within the horizon (rounds {r0}..{r0 + s.shape[2] - 1})"
        )
    busy = a.sum(axis=1)
    if (busy > 1).any():
        d, t = _first(busy > 1)
        models = [int(k) for k in np.flatnonzero(a[d, :, t])]
        raise ScheduleError(
            f"device {d} is on models {models} at once in round {r0 + t} "
            "(one model per device at a time)"
        )


def validate(
    s: Schedule,
    has_data: np.ndarray,
    channels: int,
    available: np.ndarray | None = None,
    busy_until: np.ndarray | None = None,
    channel_used: np.ndarray | None = None,
) -> np.ndarray:
    """Check every constraint of SPEC B; returns A or raises ``ScheduleError``.

    ``has_data`` (N x M): device n holds data for model m. ``channels``: C uploads per round.
    ``available`` (N x T): device n may be active in round t. ``busy_until`` (N): absolute round
    from which device n is free of sessions committed earlier. ``channel_used`` (T): uploads of
    those earlier sessions in each round.
    """
    _check_tensors(s)
    n, m, horizon = s.shape
    r0 = s.first_round
    if has_data.shape != (n, m):
        raise ScheduleError(f"has_data must be N x M = {(n, m)}, got {has_data.shape}")
    a = s.active()
    _check_sessions(s, a)
    no_data = s.starts & ~has_data[:, :, None].astype(bool)
    if no_data.any():
        d, k, t = _first(no_data)
        raise ScheduleError(f"device {d} has no data for model {k} but starts it in round {r0 + t}")
    on = a.sum(axis=1) > 0
    if available is not None:
        off = on & ~available.astype(bool)
        if off.any():
            d, t = _first(off)
            k = int(np.argmax(a[d, :, t]))
            raise ScheduleError(f"device {d} is unavailable in round {r0 + t} but on model {k}")
    if busy_until is not None:
        rounds = r0 + np.arange(horizon)
        clash = on & (rounds[None, :] < busy_until[:, None])
        if clash.any():
            d, t = _first(clash)
            raise ScheduleError(
                f"device {d} is still busy with an earlier session in round {r0 + t} "
                f"(free from round {int(busy_until[d])}) but is scheduled on model "
                f"{int(np.argmax(a[d, :, t]))}"
            )
    ups = s.uploads.sum(axis=(0, 1)) + (channel_used if channel_used is not None else 0)
    if channels < 1:
        raise ScheduleError(f"channels = {channels}: need at least one upload channel")
    if (ups > channels).any():
        t = int(np.argmax(ups > channels))
        who = [(int(d), int(k)) for d, k in np.argwhere(s.uploads[:, :, t])]
        raise ScheduleError(
            f"round {r0 + t} has {int(ups[t])} uploads for {channels} channels "
            f"(device, model: {who})"
        )
    return a

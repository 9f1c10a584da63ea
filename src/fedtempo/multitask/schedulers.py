"""Schedulers: who trains which model when, with how many iterations and how big a batch.

A scheduler maps a ``PlanContext`` (the horizon, who holds data, who is available or still
busy, channel use) to a ``Schedule``. The baselines of SPEC B are here:
- ``round_robin``: synchronous; every round up to C free devices (taken in cyclic order) each
  train their next model (cyclic over the models they hold data for) within the round;
- ``async_random``: asynchronous; each idle available device starts a random model of its own
  and uploads when its session is done (it waits for a free channel), fixed gamma and B.
``round_robin`` also takes a ``spare`` mask of (device, model) pairs it skips: with
``costly_devices`` it spares the devices that spend the most energy per FLOP from every model but
the lightest (a hand-made energy-aware schedule; see ``costly_devices``).
The optimiser is ``fedtempo.multitask.optimised.SCAScheduler``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from fedtempo.alloc.mafl import TaskTerms
from fedtempo.multitask.schedule import Schedule, empty_schedule


@dataclass(frozen=True)
class PlanContext:
    """What a scheduler may use to plan rounds ``first_round .. first_round + horizon - 1``.

    ``session_rounds[n, m]``: rounds a session of model m on device n needs at the nominal
    ``iterations`` x ``batch`` (download, compute, upload). ``busy_until[n]``: absolute round
    from which device n is free. ``channel_used[t]``: uploads already committed in round t.
    ``terms``: the current constants of every model's surrogate (for the optimiser);
    ``recent[n, m]``: sessions of m on n that started in the recent past (None: not counted);
    ``recent_work[n, m]``: the same sessions, each counted by ``visit_work`` of its samples.
    """

    first_round: int
    horizon: int
    has_data: np.ndarray
    available: np.ndarray
    channels: int
    session_rounds: np.ndarray
    busy_until: np.ndarray
    channel_used: np.ndarray
    iterations: int
    batch: int
    terms: tuple[TaskTerms, ...] = ()
    recent: np.ndarray | None = None
    recent_work: np.ndarray | None = None

    @property
    def devices(self) -> int:
        return int(self.has_data.shape[0])

    @property
    def models(self) -> int:
        return int(self.has_data.shape[1])

    def free(self, device: int, t: int) -> bool:
        """Device may start or continue a session in relative round t (available, not busy)."""
        return bool(self.available[device, t]) and self.first_round + t >= int(
            self.busy_until[device]
        )

    def blank(self) -> Schedule:
        return empty_schedule(
            self.devices, self.models, self.horizon, self.first_round, self.iterations, self.batch
        )


def round_robin(ctx: PlanContext, spare: np.ndarray | None = None) -> Schedule:
    """Synchronous round-robin: in round r, devices in cyclic order from (r x C) mod N take the
    free channels; device n trains model ``own[(r + n) mod len(own)]`` (its data models) within
    the round (S = U = 1 at r). ``spare`` (N x M bool): a device whose turn falls on a spared
    pair lets the next device in the cycle take the channel (its other models keep their turns)."""
    out = ctx.blank()
    n = ctx.devices
    for t in range(ctx.horizon):
        r = ctx.first_round + t
        room = ctx.channels - int(ctx.channel_used[t])
        for k in range(n):
            if room <= 0:
                break
            d = (r * ctx.channels + k) % n
            own = np.flatnonzero(ctx.has_data[d])
            if len(own) == 0 or not ctx.free(d, t):
                continue
            m = int(own[(r + d) % len(own)])
            if spare is not None and spare[d, m]:
                continue
            out.starts[d, m, t] = out.uploads[d, m, t] = True
            room -= 1
    return out


def costly_devices(
    speed: np.ndarray, train_flops: np.ndarray, count: int, models: Literal["heavy", "all"]
) -> np.ndarray:
    """The ``spare`` mask (N x M) of the ``count`` devices with the highest compute energy per
    FLOP (kappa f^2: the fastest): spared from every model (``models = "all"``) or from every
    model but the one with the fewest training FLOPs per sample ("heavy"). In W-mafl (base,
    seed 0) a FLOP costs 200x more on the fastest device than on the slowest, and the 5 fastest
    of 20 spend three quarters of round-robin's compute energy."""
    mask = np.zeros((len(speed), len(train_flops)), dtype=bool)
    if count <= 0:
        return mask
    costly = np.argsort(np.asarray(speed), kind="stable")[len(speed) - count :]
    mask[costly, :] = True
    if models == "heavy":
        mask[costly, int(np.argmin(train_flops))] = False
    return mask


def async_random(ctx: PlanContext, rng: np.random.Generator) -> Schedule:
    """Asynchronous random scheduling: in each round, idle available devices (in random order)
    start a uniformly random model of theirs; a session of m on n uploads in its
    ``session_rounds``-th round, or later when that round's channels are full; a session that
    cannot upload within the horizon (or whose device goes offline) is not started."""
    out = ctx.blank()
    used = ctx.channel_used.astype(np.int64).copy()
    free_from = np.maximum(ctx.busy_until - ctx.first_round, 0)
    for t in range(ctx.horizon):
        for d in rng.permutation(ctx.devices):
            own = np.flatnonzero(ctx.has_data[d])
            if len(own) == 0 or free_from[d] > t or not ctx.available[d, t]:
                continue
            m = int(own[rng.integers(len(own))])
            u = t + int(ctx.session_rounds[d, m]) - 1
            while u < ctx.horizon and used[u] >= ctx.channels:
                u += 1
            if u >= ctx.horizon or not ctx.available[d, t : u + 1].all():
                continue
            out.starts[d, m, t] = out.uploads[d, m, u] = True
            used[u] += 1
            free_from[d] = u + 1
    return out

"""Asynchronous aggregation, composed: staleness weight x server step (DESIGN rule 2).

- FedAsync (Xie et al. 2019):  weight = constant/polynomial/hinge, ``MixStep(alpha)``:
  x <- (1 - a) x_t + a (x_tau + Delta), a = alpha * s(t - tau).
- FedBuff (Nguyen et al. 2022): weight = constant or 1/sqrt(1 + staleness), ``BufferStep(k, lr)``:
  every k updates, x <- x_t + lr * (1/k) sum_i s_i Delta_i.
- AsyncFedED (Wang et al. 2022): weight = ``Euclidean(lambda, epsilon)``, ``DeltaStep(1)``:
  x <- x_t + eta Delta, eta = lambda / (gamma + epsilon), gamma = ||x_t - x_{t-tau}|| / ||Delta||.

The rule objects are immutable configuration; all state lives in an explicit ``AsyncState``,
so many rules (jobs, tasks) can live side by side.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch

from fedtempo.aggregation import staleness as st
from fedtempo.aggregation.reducers import coefficient_sum
from fedtempo.aggregation.staleness import Staleness, StalenessWeight
from fedtempo.aggregation.versions import VersionStore
from fedtempo.client.local import Update
from fedtempo.params import is_finite, l2_norm


@dataclass
class AsyncState:
    """The server side of one asynchronous task."""

    store: VersionStore
    buffer: list[tuple[Update, float]] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)

    @property
    def params(self) -> torch.Tensor:
        return self.store.latest

    @property
    def version(self) -> int:
        return self.store.current


@dataclass(frozen=True)
class Outcome:
    """What happened to one update. ``reason`` is empty when it was accepted; ``version`` is the
    version it produced (None when it was buffered or rejected)."""

    reason: str
    staleness: Staleness | None = None
    weight: float = math.nan
    version: int | None = None

    @property
    def accepted(self) -> bool:
        return not self.reason


class Step(Protocol):
    """How an asynchronous server applies one accepted update (DESIGN rule 2: when x how).

    Contract: ``apply`` gets the update, its staleness ``weight`` (from the rule's
    ``StalenessWeight``, in [0, inf)) and ``base``, the global vector of the version the client
    started from (x_tau); it returns the new global vector, or None while it only buffers. It
    may keep what it buffers in ``state.buffer`` and must not change ``state.store``.
    """

    def apply(
        self, state: AsyncState, update: Update, weight: float, base: torch.Tensor
    ) -> torch.Tensor | None:
        """New global vector, or None if nothing is applied yet (buffering)."""
        ...


@dataclass(frozen=True)
class MixStep:
    """FedAsync: x <- (1 - a) x_t + a x_client, a = alpha * weight, x_client = x_tau + Delta."""

    alpha: float = 0.6

    def apply(
        self, state: AsyncState, update: Update, weight: float, base: torch.Tensor
    ) -> torch.Tensor:
        a = self.alpha * weight
        return (1.0 - a) * state.params + a * (base + update.delta)


@dataclass(frozen=True)
class DeltaStep:
    """x <- x_t + lr * weight * Delta (AsyncFedED with weight = eta; plain async SGD on
    deltas with a constant weight)."""

    lr: float = 1.0

    def apply(
        self, state: AsyncState, update: Update, weight: float, base: torch.Tensor
    ) -> torch.Tensor:
        return state.params + (self.lr * weight) * update.delta


@dataclass(frozen=True)
class BufferStep:
    """FedBuff: buffer weighted deltas; every ``size`` of them apply
    x <- x_t + lr * sum_i c_i Delta_i with c_i = s_i / size, or, with ``by_samples``,
    c_i = s_i n_i / sum_j n_j (then a full buffer of fresh updates is exactly a FedAvg round)."""

    size: int = 10
    lr: float = 1.0
    by_samples: bool = False

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"buffer size must be >= 1, got {self.size}")

    def apply(
        self, state: AsyncState, update: Update, weight: float, base: torch.Tensor
    ) -> torch.Tensor | None:
        state.buffer.append((update, weight))
        if len(state.buffer) < self.size:
            return None
        updates = [u for u, _ in state.buffer]
        if self.by_samples:
            total = float(sum(u.num_samples for u in updates))
            coefs = [w * u.num_samples / total for u, w in state.buffer]
        else:
            coefs = [w / len(updates) for _, w in state.buffer]
        state.buffer.clear()
        return state.params + self.lr * coefficient_sum(updates, coefs)


def staleness_of(
    state: AsyncState, update: Update, base: torch.Tensor, delta_norm: float | None = None
) -> Staleness:
    """Staleness in versions and AsyncFedED's gamma (0 if no update was applied in between,
    inf if Delta is zero); ``delta_norm`` is ||Delta|| where the caller has it already."""
    versions = state.version - update.base_version
    delta_norm = l2_norm(update.delta) if delta_norm is None else delta_norm
    drift = 0.0 if versions == 0 else l2_norm(state.params - base)
    distance = drift / delta_norm if delta_norm > 0 else math.inf
    return Staleness(versions, distance)


@dataclass(frozen=True)
class AsyncAggregator:
    """A staleness weight composed with a server step."""

    weight: StalenessWeight
    step: Step

    def init(self, params: torch.Tensor, version: int = 0) -> AsyncState:
        return AsyncState(VersionStore(params, version))

    def check(self, state: AsyncState, update: Update) -> str:
        """Why ``update`` must be rejected, or '' if it is acceptable."""
        return self._checked(state, update)[0]

    def _checked(self, state: AsyncState, update: Update) -> tuple[str, float]:
        known = update.base_version in state.store and update.base_version <= state.version
        return self._problem(update, known, state.params)

    def problem(self, update: Update, known_base: bool, like: torch.Tensor) -> str:
        """``check`` for a driver that keeps the versions elsewhere (the service's ledger):
        ``known_base`` whether the update's base version is still held, ``like`` a tensor of
        the model's shape and dtype."""
        return self._problem(update, known_base, like)[0]

    def _problem(self, update: Update, known_base: bool, like: torch.Tensor) -> tuple[str, float]:
        """(why ``update`` must be rejected or '', ||Delta|| where it got that far, else nan)."""
        if not known_base:
            return "unknown base version", math.nan
        if update.delta.shape != like.shape:
            return "shape mismatch", math.nan
        if update.delta.dtype != like.dtype:
            return "dtype mismatch", math.nan
        norm = l2_norm(update.delta)
        # a finite norm means every entry is finite; a non-finite one may be an overflow of
        # huge finite entries, so then each entry is checked
        if not math.isfinite(norm) and not is_finite(update.delta):
            return "non-finite values", norm
        if self.weight.needs_distance and norm == 0.0:  # gamma undefined
            return "zero delta", norm
        return "", norm

    def describe(self) -> dict[str, Any]:
        """The rule as JSON data (``async_rule_from`` reads it back)."""
        return {"weight": _described(self.weight), "step": _described(self.step)}

    def on_update(self, state: AsyncState, update: Update) -> tuple[AsyncState, Outcome]:
        """Consume one update. A rejected update is counted in ``state.rejected`` and never
        touches the global model. The caller releases the update's base version afterwards."""
        reason, norm = self._checked(state, update)
        if reason:
            state.rejected[reason] = state.rejected.get(reason, 0) + 1
            return state, Outcome(reason)
        base = state.store.get(update.base_version)
        staleness = staleness_of(state, update, base, norm)
        w = self.weight(staleness)
        new = self.step.apply(state, update, w, base)
        version = state.store.publish(new) if new is not None else None
        return state, Outcome("", staleness, w, version)


def adapt_epochs(k: int, gamma: float, kappa: float, gamma_bar: float, k_max: int) -> int:
    """AsyncFedED's adaptive local epochs: clip(K + floor(kappa (gamma_bar - gamma)), 1, K_max).

    (The clip to [1, K_max] is fedtempo's design; an infinite gamma gives 1.)
    """
    if math.isinf(gamma):
        return 1
    return int(min(max(k + math.floor(kappa * (gamma_bar - gamma)), 1), k_max))


# the rule parts a description may name (nothing else is ever constructed from one)
_WEIGHTS = (st.Constant, st.Polynomial, st.Hinge, st.InverseSqrt, st.Euclidean)
_PARTS: dict[str, type] = {c.__name__: c for c in (*_WEIGHTS, MixStep, DeltaStep, BufferStep)}


def _described(part: object) -> dict[str, Any]:
    return {"kind": type(part).__name__, **asdict(part)}  # type: ignore[call-overload]


def async_rule_from(data: Any) -> AsyncAggregator:
    """The rule ``AsyncAggregator.describe`` wrote (for a process that applies updates on the
    rule's behalf: the service's aggregator workers)."""
    try:
        parts = []
        for key in ("weight", "step"):
            fields = dict(data[key])
            kind = _PARTS[fields.pop("kind")]
            parts.append(kind(**fields))
        return AsyncAggregator(parts[0], parts[1])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not an asynchronous rule description: {data!r} ({exc})") from None

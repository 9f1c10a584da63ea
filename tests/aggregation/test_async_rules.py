"""Asynchronous rules on hand-made updates: formulas, reductions, rejection of bad input."""

from __future__ import annotations

import math

import pytest
import torch

from fedtempo.aggregation import (
    AsyncAggregator,
    BufferStep,
    Constant,
    DeltaStep,
    Euclidean,
    FedAvg,
    Hinge,
    InverseSqrt,
    MixStep,
    Polynomial,
    Staleness,
    VersionStore,
    adapt_epochs,
)
from fedtempo.client.local import Update


def upd(client: int, base: int, delta: list[float], n: int = 10) -> Update:
    return Update(client, 0, base, torch.tensor(delta), n, 1, 0.0)


def test_asyncfeded_by_hand() -> None:
    rule = AsyncAggregator(Euclidean(lam=1.0, epsilon=1.0), DeltaStep())
    state = rule.init(torch.zeros(2))
    state.store.acquire()
    state.store.acquire()  # two clients start from version 0
    _, a = rule.on_update(state, upd(0, 0, [1.0, 0.0]))
    # nothing applied in between: gamma = 0, eta = lambda / epsilon = 1
    assert a.staleness == Staleness(0, 0.0) and a.weight == 1.0 and a.version == 1
    assert state.params.tolist() == [1.0, 0.0]
    _, b = rule.on_update(state, upd(1, 0, [0.0, 2.0]))
    # gamma = ||x1 - x0|| / ||Delta|| = 1 / 2; eta = 1 / 1.5
    assert b.staleness == Staleness(1, 0.5) and b.weight == pytest.approx(2 / 3)
    assert torch.allclose(state.params, torch.tensor([1.0, 4 / 3]))


def test_asyncfeded_with_gamma_zero_applies_lambda_over_epsilon() -> None:
    rule = AsyncAggregator(Euclidean(lam=0.3, epsilon=0.5), DeltaStep())
    x0 = torch.tensor([1.0, -2.0, 3.0])
    state = rule.init(x0.clone())
    state.store.acquire()
    delta = torch.tensor([0.5, 0.25, -1.0])
    rule.on_update(state, upd(0, 0, delta.tolist()))
    assert torch.equal(state.params, x0 + (0.3 / 0.5) * delta)


def test_fixed_eta_is_plain_async_sgd_on_deltas() -> None:
    rule = AsyncAggregator(Constant(), DeltaStep(lr=0.5))
    state = rule.init(torch.zeros(2))
    expected = torch.zeros(2)
    for i, d in enumerate(([1.0, 2.0], [-1.0, 0.5], [3.0, 3.0])):
        state.store.acquire()
        rule.on_update(state, upd(i, state.version, d))
        expected = expected + 0.5 * torch.tensor(d)
    assert torch.equal(state.params, expected)


def test_fedasync_constant_alpha_one_replaces_the_model() -> None:
    rule = AsyncAggregator(Constant(), MixStep(alpha=1.0))
    state = rule.init(torch.tensor([5.0, 5.0]))
    state.store.acquire()  # client 0 from v0
    state.store.acquire()  # client 1 from v0
    rule.on_update(state, upd(1, 0, [1.0, 1.0]))
    base = state.store.get(0)
    delta = torch.tensor([0.25, -3.0])
    rule.on_update(state, upd(0, 0, delta.tolist()))
    assert torch.equal(state.params, base + delta)  # the client's model, stale or not


def test_fedasync_mixing_is_recomputed_from_each_updates_staleness() -> None:
    rule = AsyncAggregator(Polynomial(a=0.5), MixStep(alpha=0.6))
    state = rule.init(torch.zeros(1))
    for _ in range(3):
        state.store.acquire()
    outcomes = [rule.on_update(state, upd(c, 0, [1.0]))[1] for c in range(3)]
    # staleness 0, 1, 2 -> weights 1, 2^-0.5, 3^-0.5 (not a cumulative decay)
    assert [o.weight for o in outcomes] == pytest.approx([1.0, 2**-0.5, 3**-0.5])


def test_staleness_functions() -> None:
    s = lambda v: Staleness(v, 0.0)  # noqa: E731
    assert Hinge(a=10, b=6)(s(6)) == 1.0 and Hinge(a=10, b=6)(s(8)) == pytest.approx(1 / 21)
    assert InverseSqrt()(s(3)) == 0.5
    assert Euclidean(2.0, 1.0)(Staleness(0, 3.0)) == 0.5
    with pytest.raises(ValueError, match="epsilon"):
        Euclidean(1.0, 0.0)


def test_fedbuff_equals_a_fedavg_round() -> None:
    x0 = torch.tensor([0.5, -1.0, 2.0])
    updates = [
        upd(3, 0, [1.0, 2.0, 3.0], 7),
        upd(1, 0, [0.1, -0.2, 0.3], 20),
        upd(2, 0, [-4.0, 0.0, 1.0], 13),
    ]
    rule = AsyncAggregator(Constant(), BufferStep(size=3, lr=1.0, by_samples=True))
    state = rule.init(x0.clone())
    outcomes = []
    for u in updates:  # arrival order differs from client order
        state.store.acquire()
        outcomes.append(rule.on_update(state, u)[1])
    assert [o.version for o in outcomes] == [None, None, 1]
    assert torch.equal(state.params, FedAvg().aggregate(x0, updates))


def test_fedbuff_plain_mean_with_staleness_weights() -> None:
    rule = AsyncAggregator(InverseSqrt(), BufferStep(size=2, lr=2.0))
    state = rule.init(torch.zeros(1))
    for _ in range(3):
        state.store.acquire()
    rule.on_update(state, upd(0, 0, [1.0]))
    rule.on_update(state, upd(1, 0, [3.0]))  # applies: 2 * (1 + 3) / 2 = 4
    assert state.params.tolist() == [4.0]
    state.store.acquire()
    rule.on_update(state, upd(2, 0, [4.0]))  # staleness 1: weight 1/sqrt(2)
    assert len(state.buffer) == 1 and state.buffer[0][1] == pytest.approx(2**-0.5)


def test_adaptive_epochs() -> None:
    assert adapt_epochs(5, 0.0, kappa=1.0, gamma_bar=2.0, k_max=20) == 7
    assert adapt_epochs(5, 4.5, kappa=1.0, gamma_bar=2.0, k_max=20) == 2  # floor(-2.5) = -3
    assert adapt_epochs(5, 100.0, kappa=1.0, gamma_bar=2.0, k_max=20) == 1
    assert adapt_epochs(19, 0.0, kappa=1.0, gamma_bar=2.0, k_max=20) == 20
    assert adapt_epochs(5, 0.0, kappa=0.0, gamma_bar=2.0, k_max=20) == 5  # kappa 0: fixed
    assert adapt_epochs(5, math.inf, kappa=1.0, gamma_bar=2.0, k_max=20) == 1


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (Update(0, 0, 0, torch.zeros(3), 1, 1, 0.0), "shape mismatch"),
        (Update(0, 0, 0, torch.ones(2, dtype=torch.float64), 1, 1, 0.0), "dtype mismatch"),
        (Update(0, 0, 0, torch.tensor([1.0, float("nan")]), 1, 1, 0.0), "non-finite values"),
        (Update(0, 0, 0, torch.tensor([1.0, float("inf")]), 1, 1, 0.0), "non-finite values"),
        (Update(0, 0, 7, torch.ones(2), 1, 1, 0.0), "unknown base version"),
        (Update(0, 0, 0, torch.zeros(2), 1, 1, 0.0), "zero delta"),
    ],
)
def test_bad_updates_are_rejected_and_counted(bad: Update, reason: str) -> None:
    rule = AsyncAggregator(Euclidean(), DeltaStep())
    state = rule.init(torch.tensor([1.0, 2.0]))
    state.store.acquire()
    _, outcome = rule.on_update(state, bad)
    assert outcome.reason == reason and not outcome.accepted
    assert state.rejected == {reason: 1}
    assert state.params.tolist() == [1.0, 2.0] and state.version == 0


def test_huge_finite_entries_are_not_taken_for_non_finite_ones() -> None:
    # ||Delta|| of these float64 entries overflows to inf; the entries themselves are finite
    rule = AsyncAggregator(Constant(), DeltaStep())
    state = rule.init(torch.zeros(2, dtype=torch.float64))
    state.store.acquire()
    huge = Update(0, 0, 0, torch.tensor([1e200, -1e200], dtype=torch.float64), 1, 1, 0.0)
    _, outcome = rule.on_update(state, huge)
    assert outcome.accepted, outcome.reason
    state.store.acquire()
    bad = Update(0, 0, 1, torch.tensor([1e200, float("nan")], dtype=torch.float64), 1, 1, 0.0)
    assert rule.on_update(state, bad)[1].reason == "non-finite values"


def test_version_store_frees_unreferenced_versions() -> None:
    store = VersionStore(torch.zeros(4))
    sizes = []
    held: list[int] = []
    for step in range(200):
        v, _ = store.acquire()
        held.append(v)
        store.publish(torch.full((4,), float(step)))
        if len(held) > 3:  # at most 4 clients hold versions at any time
            store.release(held.pop(0))
        sizes.append(len(store))
    assert max(sizes) <= 5  # held versions + the current one; no growth with updates
    for v in held:
        store.release(v)
    assert len(store) == 1
    with pytest.raises(ValueError, match="released more often"):
        store.release(store.current)

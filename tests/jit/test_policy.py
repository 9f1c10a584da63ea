"""JIT policy pieces: associative fusion, EWMA prediction, trigger, least laxity first."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtempo.jit import (
    ArrivalPredictor,
    Buffered,
    RunningSum,
    Waiting,
    laxity,
    least_laxity_first,
    predicted_quorum,
    trigger_time,
)


@given(st.integers(0, 1000), st.integers(2, 12), st.integers(1, 11))
@settings(max_examples=30, deadline=None)
def test_partial_fusions_equal_one_fusion(seed: int, n: int, cut: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    vecs = [torch.randn(50, generator=gen) for _ in range(n)]
    weights = [float(w) for w in torch.rand(n, generator=gen) + 0.1]
    whole = RunningSum()
    for v, w in zip(vecs, weights, strict=True):
        whole.add(v, w)
    cut = min(cut, n - 1)
    a, b = RunningSum(), RunningSum()
    for v, w in zip(vecs[:cut], weights[:cut], strict=True):
        a.add(v, w)
    for v, w in zip(vecs[cut:], weights[cut:], strict=True):
        b.add(v, w)
    a.merge(b)
    assert torch.allclose(a.result(), whole.result(), atol=1e-6, rtol=0)
    expected = sum(w * v.double() for v, w in zip(vecs, weights, strict=True)) / sum(weights)
    assert torch.allclose(whole.result().double(), expected, atol=1e-6)
    assert a.count == whole.count == n


def test_fusion_rejects_bad_updates() -> None:
    s = RunningSum()
    s.add(torch.ones(3), 1.0)
    with pytest.raises(ValueError, match="3"):
        s.add(torch.ones(4), 1.0)
    with pytest.raises(ValueError, match="weight"):
        s.add(torch.ones(3), 0.0)
    with pytest.raises(ValueError, match="nothing fused"):
        RunningSum().result()


def test_ewma_prediction() -> None:
    p = ArrivalPredictor(np.array([10.0, 20.0]), alpha=0.5, safety_sd=2.0)
    assert list(p.durations()) == [10.0, 20.0]  # the profile until observed
    p.observe(0, 12.0)
    assert p.durations()[0] == 12.0  # first observation replaces the profile
    p.observe(0, 16.0)  # mean 14, var = 0.5 * (0 + 0.5 * 16) = 4
    assert p.mean[0] == 14.0 and p.var[0] == 4.0
    assert p.durations()[0] == 14.0 + 2.0 * 2.0
    with pytest.raises(ValueError, match="alpha"):
        ArrivalPredictor(np.ones(1), alpha=0.0)


def test_quorum_trigger_and_laxity() -> None:
    arr = np.array([5.0, 1.0, np.inf, 3.0])
    assert predicted_quorum(arr, 2) == 3.0
    assert predicted_quorum(arr, 4) == np.inf
    assert predicted_quorum(arr, 5) == np.inf
    assert trigger_time(100.0, 10.0, 2.0, 1.0) == 87.0
    assert laxity(100.0, 80.0, 10.0, 2.0) == 8.0


def test_least_laxity_first_orders_hand_made_jobs() -> None:
    jobs = [
        Waiting(job=0, laxity=5.0, pending=3),
        Waiting(job=1, laxity=-1.0, pending=1),  # already late: first
        Waiting(job=2, laxity=5.0, pending=7),  # same laxity as 0, more pending work
        Waiting(job=3, laxity=2.0, pending=0),
        Waiting(job=4, laxity=8.0, pending=0, weight=4.0),  # weighted: 8 / 4 = 2, tie with 3
    ]
    assert least_laxity_first(jobs) == [1, 3, 4, 2, 0]


def test_buffered_rules_need_every_update() -> None:
    ups = [torch.tensor([1.0, 10.0]), torch.tensor([3.0, -2.0]), torch.tensor([2.0, 4.0])]
    med = Buffered("median")
    for u in ups:
        med.add(u, 1.0)
    assert torch.equal(med.result(), torch.tensor([2.0, 4.0]))
    med.add(torch.tensor([4.0, 0.0]), 1.0)  # even count: the mean of the two middle values
    assert torch.equal(med.result(), torch.tensor([2.5, 2.0]))
    trimmed = Buffered("trimmed_mean", trim=0.25)  # 4 updates: drop one at each end
    for u in [*ups, torch.tensor([4.0, 0.0])]:
        trimmed.add(u, 1.0)
    assert torch.equal(trimmed.result(), torch.tensor([2.5, 2.0]))
    # A merge joins buffers; the result is that of one buffer with every update.
    a, b, whole = Buffered(), Buffered(), Buffered()
    for i, u in enumerate(ups):
        (a if i < 2 else b).add(u, 1.0)
        whole.add(u, 1.0)
    a.merge(b)
    assert torch.equal(a.result(), whole.result()) and a.count == 3
    assert RunningSum.incremental and not Buffered.incremental
    with pytest.raises(ValueError, match="has 3 entries"):
        whole.add(torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="trim"):
        Buffered("trimmed_mean", trim=0.5)
    with pytest.raises(ValueError, match="nothing fused"):
        Buffered().result()

"""Hypothesis properties of the reducers: permutation invariance, weight scaling, identity."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtempo.aggregation import FedAvg, sample_weighted_delta
from fedtempo.client.local import Update
from fedtempo.params import weighted_mean

floats = st.floats(-100, 100, allow_nan=False, width=32)


@st.composite
def updates(draw: st.DrawFn) -> list[Update]:
    n = draw(st.integers(1, 6))
    dim = draw(st.integers(1, 5))
    return [
        Update(
            c,
            0,
            0,
            torch.tensor(draw(st.lists(floats, min_size=dim, max_size=dim))),
            draw(st.integers(1, 1000)),
            1,
            0.0,
        )
        for c in range(n)
    ]


@given(updates(), st.randoms())
@settings(max_examples=100)
def test_permutation_invariance_is_exact(us: list[Update], rnd) -> None:  # type: ignore[no-untyped-def]
    shuffled = list(us)
    rnd.shuffle(shuffled)
    assert torch.equal(sample_weighted_delta(us), sample_weighted_delta(shuffled))


@given(updates(), st.integers(2, 50))
def test_scaling_every_weight_changes_nothing(us: list[Update], k: int) -> None:
    scaled = [Update(u.client, 0, 0, u.delta, u.num_samples * k, 1, 0.0) for u in us]
    assert torch.allclose(
        sample_weighted_delta(us), sample_weighted_delta(scaled), rtol=1e-6, atol=1e-5
    )


@given(
    st.lists(floats, min_size=1, max_size=5), st.lists(st.floats(0.1, 10), min_size=1, max_size=6)
)
def test_mean_of_identical_vectors_is_the_vector(v: list[float], ws: list[float]) -> None:
    vec = torch.tensor(v)
    assert torch.allclose(weighted_mean([vec] * len(ws), ws), vec, rtol=1e-6, atol=1e-5)


@given(updates())
def test_fedavg_with_zero_deltas_is_identity(us: list[Update]) -> None:
    zero = [Update(u.client, 0, 0, torch.zeros_like(u.delta), u.num_samples, 1, 0.0) for u in us]
    x = torch.arange(float(us[0].delta.numel()))
    assert torch.equal(FedAvg().aggregate(x, zero), x)


@given(updates(), st.randoms())
@settings(max_examples=60)
def test_robust_rules_are_order_free_and_bounded(us: list[Update], rnd) -> None:  # type: ignore[no-untyped-def]
    from fedtempo.aggregation import coordinate_median, trimmed_mean

    vectors = [u.delta for u in us]
    shuffled = list(vectors)
    rnd.shuffle(shuffled)
    stacked = torch.stack(vectors)
    for rule in (coordinate_median, lambda v: trimmed_mean(v, 0.2)):
        out = rule(vectors)
        assert torch.equal(out, rule(shuffled))
        assert torch.all(out >= stacked.min(dim=0).values - 1e-4)
        assert torch.all(out <= stacked.max(dim=0).values + 1e-4)
    # every vector the same: both rules return it
    same = [vectors[0]] * len(vectors)
    assert torch.allclose(coordinate_median(same), vectors[0])
    assert torch.allclose(trimmed_mean(same, 0.2), vectors[0])
    # with no trimming the trimmed mean is the plain mean
    assert torch.allclose(trimmed_mean(vectors, 0.0), stacked.mean(dim=0), atol=1e-4)

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fedtempo.models import build_model
from fedtempo.params import flatten, is_finite, l2_norm, load_vector, num_parameters, weighted_mean
from fedtempo.rng import Streams


def test_flatten_load_roundtrip() -> None:
    m = build_model("mlp", (1, 8, 8), 10, torch.Generator().manual_seed(1))
    v = flatten(m)
    assert v.dtype == torch.float32 and v.numel() == num_parameters(m)
    load_vector(m, torch.zeros_like(v))
    assert float(flatten(m).abs().sum()) == 0.0
    load_vector(m, v)
    assert torch.equal(flatten(m), v)
    with torch.no_grad():
        next(m.parameters()).add_(1.0)
    assert not torch.equal(flatten(m), v)  # parameters are copies, never views of v


def test_load_vector_rejects_wrong_length() -> None:
    m = build_model("logreg", (4,), 3, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="expects"):
        load_vector(m, torch.zeros(5))


def test_weighted_mean_and_norm() -> None:
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 4.0])
    assert torch.allclose(weighted_mean([a, b], [3, 1]), torch.tensor([0.75, 1.0]))
    assert l2_norm(torch.tensor([3.0, 4.0])) == 5.0
    assert not is_finite(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError):
        weighted_mean([a], [0.0])


@given(st.integers(0, 2**31), st.text(min_size=1, max_size=10), st.integers(0, 1000))
def test_streams_are_reproducible_and_independent(seed: int, purpose: str, key: int) -> None:
    s1, s2 = Streams(seed), Streams(seed)
    assert s1.numpy(purpose, key).integers(0, 2**62) == s2.numpy(purpose, key).integers(0, 2**62)
    a = s1.torch(purpose, key).initial_seed()
    assert a == s2.torch(purpose, key).initial_seed()
    # another key gives another stream
    assert s1.numpy(purpose, key).random() != s1.numpy(purpose, key + 1).random()


def test_stream_order_does_not_matter() -> None:
    s = Streams(7)
    first = s.numpy("a", 1).random(3)
    s.numpy("b", 2).random(100)
    assert np.array_equal(first, Streams(7).numpy("a", 1).random(3))

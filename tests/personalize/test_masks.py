import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fedtempo.models import build_model
from fedtempo.personalize import (
    MaskedUpload,
    kept_count,
    magnitude_mask,
    masked_average,
    personal_mask,
    upload_bytes,
)


@given(st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=60), st.floats(0.0, 1.0))
def test_mask_keeps_exactly_ceil_and_the_largest(values: list[float], rho: float) -> None:
    u = torch.tensor(values)
    m = magnitude_mask(u, rho)
    k = math.ceil((1 - rho) * len(values) - 1e-9)
    assert int(m.sum()) == k == kept_count(len(values), rho)
    if 0 < k < len(values):
        assert u[m].abs().min() >= u[~m].abs().max()  # the kept ones are the largest
    # magnitude pruning satisfies ||u - u*m||^2 <= rho ||u||^2
    assert float(((u - u * m) ** 2).sum()) <= rho * float((u**2).sum()) + 1e-5


def test_rho_zero_keeps_everything() -> None:
    u = torch.randn(50, generator=torch.Generator().manual_seed(0))
    assert bool(magnitude_mask(u, 0.0).all())
    with pytest.raises(ValueError):
        kept_count(10, 1.5)


def test_upload_bytes_picks_the_smaller_encoding() -> None:
    assert upload_bytes(1000, 900) == 900 * 4 + 125  # bitmap (125 B) beats 3600 B of indices
    assert upload_bytes(1000, 10) == 10 * 4 + 40  # 40 B of indices beat the bitmap
    assert upload_bytes(1000, 0) == 0
    assert upload_bytes(1000, 1000) == 4000  # nothing pruned: no mask


def test_masked_average_by_hand() -> None:
    current = torch.tensor([9.0, 9.0, 9.0, 9.0])
    a = MaskedUpload(torch.tensor([1.0, 2.0, 0.0, 0.0]), torch.tensor([1, 1, 0, 0]).bool(), 1.0)
    b = MaskedUpload(torch.tensor([3.0, 0.0, 6.0, 0.0]), torch.tensor([1, 0, 1, 0]).bool(), 3.0)
    out = masked_average(current, [a, b])
    # coord 0: (1*1 + 3*3) / 4 = 2.5; coord 1: only a -> 2; coord 2: only b -> 6; coord 3: kept by
    # nobody -> old value 9
    assert out.tolist() == [2.5, 2.0, 6.0, 9.0]


def test_masked_average_with_full_masks_is_the_weighted_mean() -> None:
    vs = [torch.randn(20, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    ups = [
        MaskedUpload(v, torch.ones(20, dtype=torch.bool), w)
        for v, w in zip(vs, [1, 2, 5], strict=True)
    ]
    expected = (vs[0] + 2 * vs[1] + 5 * vs[2]) / 8
    assert torch.allclose(masked_average(torch.zeros(20), ups), expected, atol=1e-6)


def test_personal_mask_by_layer_name() -> None:
    model = build_model("cnn-s", (1, 28, 28), 10, torch.Generator().manual_seed(0))
    m = personal_mask(model, ["9"])  # the last Linear(64, 10)
    assert int(m.sum()) == 64 * 10 + 10 and bool(m[-650:].all())
    with pytest.raises(ValueError, match="not in the model"):
        personal_mask(model, ["head"])


def _setup():  # type: ignore[no-untyped-def]
    from fedtempo.params import flatten
    from fedtempo.testing import tiny_dataset

    data = tiny_dataset()
    model = build_model("mlp", data.input_shape, data.num_classes, torch.Generator().manual_seed(0))
    return model, flatten(model), personal_mask(model, ["5"]), data


def test_frozen_entries_stay_exactly_fixed_under_momentum_and_decay() -> None:
    from fedtempo.client.local import LocalSpec, train_local

    model, start, personal, data = _setup()
    spec = LocalSpec(epochs=2, batch_size=16, lr=0.1, momentum=0.9, weight_decay=0.01)
    delta, _, _ = train_local(
        model, start, data.x, data.y, spec, torch.Generator().manual_seed(0), trainable=personal
    )
    assert float(delta[~personal].abs().max()) == 0.0
    assert float(delta[personal].abs().max()) > 0.0


def test_pruning_ratio_zero_equals_dense_personalized_training() -> None:
    from fedtempo.client.local import LocalSpec
    from fedtempo.personalize.training import train_personalized

    model, start, personal, data = _setup()
    spec = LocalSpec(epochs=1, batch_size=16, lr=0.1)
    pruned = train_personalized(
        model, start, personal, 0.0, data.x, data.y, spec, spec, torch.Generator().manual_seed(3)
    )
    # dense: personal phase then global phase with nothing pruned, by hand
    from fedtempo.client.local import train_local

    gen = torch.Generator().manual_seed(3)
    d1, _, _ = train_local(model, start, data.x, data.y, spec, gen, trainable=personal)
    d2, _, _ = train_local(model, start + d1, data.x, data.y, spec, gen, trainable=~personal)
    assert torch.equal(pruned.vector, start + d1 + d2)
    assert bool(pruned.keep.all())


def test_pruned_entries_stay_zero_and_the_rest_trains() -> None:
    from fedtempo.client.local import LocalSpec
    from fedtempo.personalize.training import train_personalized

    model, start, personal, data = _setup()
    spec = LocalSpec(epochs=1, batch_size=16, lr=0.1, momentum=0.9)
    out = train_personalized(
        model, start, personal, 0.7, data.x, data.y, spec, spec, torch.Generator().manual_seed(0)
    )
    glob = out.vector[~personal]
    assert int(out.keep.sum()) == math.ceil(0.3 * int((~personal).sum()) - 1e-9)
    assert float(glob[~out.keep].abs().max()) == 0.0
    assert not torch.equal(glob[out.keep], start[~personal][out.keep])

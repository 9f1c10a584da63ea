import itertools

import numpy as np
import pytest
import torch

from fedtempo.data.datasets import load_digits
from fedtempo.data.synthetic import leaf_synthetic


def test_synthetic_shapes_and_natural_split() -> None:
    b = leaf_synthetic(0.5, 0.5, 10, np.random.default_rng(0))
    assert b.train.input_shape == (60,) and b.train.num_classes == 10
    assert len(b.natural_train) == 10 and len(b.natural_test) == 10
    assert np.array_equal(np.concatenate(b.natural_train), np.arange(len(b.train)))
    assert np.array_equal(np.concatenate(b.natural_test), np.arange(len(b.test)))
    sizes = [len(a) + len(t) for a, t in zip(b.natural_train, b.natural_test, strict=True)]
    assert min(sizes) >= 50  # min_size


def test_synthetic_is_deterministic_and_heterogeneous() -> None:
    a = leaf_synthetic(1.0, 1.0, 8, np.random.default_rng(3))
    b = leaf_synthetic(1.0, 1.0, 8, np.random.default_rng(3))
    assert a.train.x.equal(b.train.x) and a.train.y.equal(b.train.y)
    # Different devices have different label distributions when alpha > 0.
    y = a.train.y.numpy()
    hists = [np.bincount(y[idx], minlength=10) / len(idx) for idx in a.natural_train]
    assert max(np.abs(hists[0] - h).sum() for h in hists[1:]) > 0.3


def test_synthetic_labels_are_argmax_of_a_linear_model() -> None:
    # Within one device, labels are a linear function of x: logistic regression fits them well.
    from sklearn.linear_model import LogisticRegression

    b = leaf_synthetic(0.0, 0.0, 1, np.random.default_rng(0), min_size=400)
    x, y = b.train.x.numpy(), b.train.y.numpy()
    assert LogisticRegression(max_iter=2000).fit(x, y).score(x, y) > 0.9


def test_digits_split() -> None:
    b = load_digits(0.2, np.random.default_rng(0))
    assert len(b.train) + len(b.test) == 1797
    assert len(b.test) == round(0.2 * 1797)
    assert b.train.input_shape == (1, 8, 8)


def test_lazy_synthetic_devices_come_from_their_own_streams() -> None:
    from fedtempo.data.clients import ClientData
    from fedtempo.data.synthetic import SyntheticClients
    from fedtempo.errors import DataError

    src = SyntheticClients(0.5, 0.5, 1000, np.random.default_rng(0))
    assert isinstance(src, ClientData) and len(src) == 1000
    later = src.data(917)
    first = src.data(3)
    # the same device has the same samples whatever was asked before, and in a new source
    again = SyntheticClients(0.5, 0.5, 1000, np.random.default_rng(0))
    assert again.data(3)[0].equal(first[0]) and again.data(917)[1].equal(later[1])
    assert src.data(917)[0].equal(later[0])
    x, y = first
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert len(x) == src.num_samples(3) == round(0.8 * int(src.counts[3]))
    test = src.test_data([3, 917])
    assert len(test) == int(src.counts[3] + src.counts[917]) - src.num_samples(3) - src.num_samples(
        917
    )
    # the test part is the rest of the same device draw
    full_x, _ = src.device(3)
    assert torch.from_numpy(full_x[src.num_samples(3) :]).equal(test.x[: len(full_x) - len(x)])
    assert min(int(c) for c in src.counts) >= 50
    # heterogeneous devices, as in the eager generator
    hists = [
        np.bincount(src.data(k)[1].numpy(), minlength=10) / src.num_samples(k) for k in range(8)
    ]
    assert max(np.abs(hists[0] - h).sum() for h in hists[1:]) > 0.3
    with pytest.raises(DataError, match="num_clients"):
        SyntheticClients(0.5, 0.5, 0, np.random.default_rng(0))


def test_a_trainer_over_lazy_data_trains_like_one_over_the_same_data_in_memory() -> None:
    import torch

    from fedtempo.client.local import LocalSpec
    from fedtempo.client.trainer import ClientTrainer
    from fedtempo.data.synthetic import SyntheticClients
    from fedtempo.models import build_model
    from fedtempo.params import flatten
    from fedtempo.rng import Streams

    src = SyntheticClients(0.5, 0.5, 20, np.random.default_rng(1))
    parts = [src.data(k) for k in range(len(src))]
    x = torch.cat([p[0] for p in parts])
    y = torch.cat([p[1] for p in parts])
    offsets = np.cumsum([0] + [len(p[1]) for p in parts])
    indices = [np.arange(a, b) for a, b in itertools.pairwise(offsets)]
    streams, spec = Streams(5), LocalSpec(epochs=1, batch_size=16, lr=0.05)
    model = build_model("logreg", (60,), 10, streams.torch("init", 0))
    start = flatten(model).clone()
    eager = ClientTrainer(0, model, x, y, indices, spec, streams)
    lazy = ClientTrainer.over(
        0, build_model("logreg", (60,), 10, streams.torch("init", 0)), src, spec, streams
    )
    assert lazy.clients_with_data() == eager.clients_with_data() == list(range(20))
    for c in (0, 7, 19):
        a, b = eager.train(c, 0, start), lazy.train(c, 0, start)
        assert a.delta.equal(b.delta) and a.num_samples == b.num_samples
    with pytest.raises(TypeError, match="generated per client"):
        _ = lazy.indexed

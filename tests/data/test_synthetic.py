import numpy as np

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

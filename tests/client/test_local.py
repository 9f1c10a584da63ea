import torch

from fedtempo.client.local import LocalSpec, evaluate, train_local
from fedtempo.models import build_model
from fedtempo.params import flatten, l2_norm
from fedtempo.testing import tiny_dataset


def _setup() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    data = tiny_dataset()
    model = build_model("mlp", data.input_shape, data.num_classes, torch.Generator().manual_seed(0))
    return model, flatten(model), data.x, data.y


def test_local_training_lowers_the_loss() -> None:
    model, start, x, y = _setup()
    _, loss0 = evaluate(model, start, x, y)
    delta, steps, _ = train_local(
        model,
        start,
        x,
        y,
        LocalSpec(epochs=5, batch_size=16, lr=0.1),
        torch.Generator().manual_seed(1),
    )
    _, loss1 = evaluate(model, start + delta, x, y)
    assert steps == 5 * 15
    assert loss1 < 0.5 * loss0


def test_training_is_deterministic_per_generator() -> None:
    model, start, x, y = _setup()
    spec = LocalSpec(epochs=2, batch_size=16, lr=0.1, momentum=0.9)
    a = train_local(model, start, x, y, spec, torch.Generator().manual_seed(3))
    b = train_local(model, start, x, y, spec, torch.Generator().manual_seed(3))
    c = train_local(model, start, x, y, spec, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and a[2] == b[2]
    assert not torch.equal(a[0], c[0])


def test_iterations_mode_counts_steps() -> None:
    model, start, x, y = _setup()
    spec = LocalSpec(iterations=37, batch_size=16)
    assert spec.num_steps(len(y)) == 37
    _, steps, _ = train_local(model, start, x, y, spec, torch.Generator().manual_seed(0))
    assert steps == 37
    assert LocalSpec(epochs=3, batch_size=50).num_steps(101) == 9
    assert LocalSpec().num_steps(0) == 0


def test_prox_zero_equals_plain_and_prox_pulls_towards_start() -> None:
    model, start, x, y = _setup()
    plain = train_local(
        model, start, x, y, LocalSpec(epochs=3, lr=0.1), torch.Generator().manual_seed(0)
    )
    zero = train_local(
        model,
        start,
        x,
        y,
        LocalSpec(epochs=3, lr=0.1, prox_mu=0.0),
        torch.Generator().manual_seed(0),
    )
    strong = train_local(
        model,
        start,
        x,
        y,
        LocalSpec(epochs=3, lr=0.1, prox_mu=5.0),
        torch.Generator().manual_seed(0),
    )
    assert torch.equal(plain[0], zero[0])
    assert l2_norm(strong[0]) < 0.7 * l2_norm(plain[0])


def test_empty_client_does_nothing() -> None:
    model, start, x, y = _setup()
    delta, steps, loss = train_local(
        model, start, x[:0], y[:0], LocalSpec(), torch.Generator().manual_seed(0)
    )
    assert steps == 0 and float(delta.abs().sum()) == 0.0 and loss != loss

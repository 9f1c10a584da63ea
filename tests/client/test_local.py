import torch

from fedtempo.client.local import LocalSpec, evaluate, train_local
from fedtempo.models import build_model
from fedtempo.params import flatten, l2_norm, load_vector
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


def test_the_sgd_step_is_torch_optim_sgd_bit_for_bit() -> None:
    """train_local's step (torch.optim.sgd.sgd, the functional form) reduces to training with
    the torch.optim.SGD class: momentum, weight decay, and entries whose gradient is None."""
    from fedtempo.client.local import batches

    data = tiny_dataset()
    for momentum, decay, frozen in [(0.0, 0.0, False), (0.9, 1e-3, False), (0.5, 0.0, True)]:
        model = build_model("mlp", data.input_shape, 10, torch.Generator().manual_seed(0))
        params = list(model.parameters())
        if frozen:  # a parameter without gradient: neither updated nor given a buffer
            params[0].requires_grad_(False)
        start = flatten(model).clone()
        spec = LocalSpec(epochs=2, batch_size=16, lr=0.1, momentum=momentum, weight_decay=decay)
        delta, steps, _ = train_local(
            model, start, data.x, data.y, spec, torch.Generator().manual_seed(5)
        )
        load_vector(model, start)
        sgd = torch.optim.SGD(params, lr=0.1, momentum=momentum, weight_decay=decay)
        for idx in batches(len(data.y), spec, steps, torch.Generator().manual_seed(5)):
            sgd.zero_grad()
            torch.nn.functional.cross_entropy(model(data.x[idx]), data.y[idx]).backward()
            sgd.step()
        assert torch.equal(delta, flatten(model) - start), (momentum, decay, frozen)


def test_training_does_not_import_torch_dynamo() -> None:
    """torch.optim.SGD.step imports torch._dynamo on first use (1.1 s of CPU per process);
    local training must not pay it."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from fedtempo.client.local import LocalSpec, train_local\n"
        "from fedtempo.models import build_model\n"
        "from fedtempo.params import flatten\n"
        "m = build_model('mlp', (1, 8, 8), 10, torch.Generator().manual_seed(0))\n"
        "x, y = torch.randn(20, 1, 8, 8), torch.randint(0, 10, (20,))\n"
        "spec = LocalSpec(epochs=1, batch_size=8, momentum=0.9)\n"
        "train_local(m, flatten(m), x, y, spec, torch.Generator().manual_seed(0))\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"

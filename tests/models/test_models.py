import pytest
import torch

from fedtempo.errors import ConfigError
from fedtempo.models import MODELS, build_model, profile_model
from fedtempo.params import flatten

SHAPES = {
    "logreg": ((1, 28, 28), 10),
    "mlp": ((1, 28, 28), 10),
    "cnn-s": ((1, 28, 28), 10),
    "femnist-cnn": ((1, 28, 28), 62),
    "char-lstm": ((80,), 80),
    "effnetv2-tiny": ((1, 28, 28), 10),
}


def test_cnn_s_has_20522_parameters() -> None:
    m = build_model("cnn-s", (1, 28, 28), 10, torch.Generator().manual_seed(0))
    assert sum(p.numel() for p in m.parameters()) == 20522
    assert profile_model("cnn-s", m, (1, 28, 28)).size_bytes == 4 * 20522


@pytest.mark.parametrize("name", list(MODELS))
def test_models_forward_and_profile(name: str) -> None:
    shape, classes = SHAPES[name]
    m = build_model(name, shape, classes, torch.Generator().manual_seed(0))
    x = torch.zeros((3, *shape), dtype=torch.int64 if name == "char-lstm" else torch.float32)
    assert m(x).shape == (3, classes)
    prof = profile_model(name, m, shape)
    assert prof.forward_flops > 0
    assert 2 * prof.forward_flops <= prof.train_flops <= 3 * prof.forward_flops


def test_logreg_flops_by_hand() -> None:
    m = build_model("logreg", (60,), 10, torch.Generator().manual_seed(0))
    prof = profile_model("logreg", m, (60,))
    assert prof.forward_flops == 2 * 60 * 10
    assert prof.num_parameters == 610


def test_init_depends_only_on_generator() -> None:
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = flatten(build_model("mlp", (1, 8, 8), 10, torch.Generator().manual_seed(5)))
    assert torch.equal(torch.random.get_rng_state(), before)  # global RNG untouched
    torch.manual_seed(999)
    b = flatten(build_model("mlp", (1, 8, 8), 10, torch.Generator().manual_seed(5)))
    assert torch.equal(a, b)
    c = flatten(build_model("mlp", (1, 8, 8), 10, torch.Generator().manual_seed(6)))
    assert not torch.equal(a, c)


def test_bad_model_requests() -> None:
    with pytest.raises(ConfigError, match="unknown model 'resnet'"):
        build_model("resnet", (1, 28, 28), 10, torch.Generator())
    with pytest.raises(ConfigError, match="needs 1x28x28"):
        build_model("cnn-s", (1, 8, 8), 10, torch.Generator())


def test_grouped_convolutions_are_counted_at_their_true_cost() -> None:
    # FlopCounterMode alone counts a depthwise conv's weight gradient as dense (128x here).
    from fedtempo.models.profile import count_flops

    conv = torch.nn.Sequential(torch.nn.Conv2d(128, 128, 3, padding=1, groups=128, bias=False))
    forward, train = count_flops(conv, torch.zeros(1, 128, 7, 7, requires_grad=True))
    assert forward == 2 * 9 * 128 * 49
    assert train == 3 * forward  # forward + input gradient + weight gradient

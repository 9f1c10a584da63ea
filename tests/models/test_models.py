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


_PROFILE_ALL = """
import json, sys
if sys.argv[1] == "dynamo-first":
    import torch._dynamo
import torch
from fedtempo.models import build_model, profile_model
from tests.models.test_models import SHAPES
out = {}
for name, (shape, classes) in SHAPES.items():
    model = build_model(name, shape, classes, torch.Generator().manual_seed(0))
    p = profile_model(name, model, shape)
    out[name] = [p.forward_flops, p.train_flops]
print(json.dumps({"profiles": out, "dynamo": "torch._dynamo" in sys.modules}))
"""


def test_counting_flops_skips_importing_dynamo_and_counts_the_same() -> None:
    # each in a fresh interpreter: whether torch._dynamo was imported is per process
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    runs = {
        how: json.loads(
            subprocess.run(
                [sys.executable, "-c", _PROFILE_ALL, how],
                capture_output=True,
                text=True,
                check=True,
                cwd=root,
            ).stdout
        )
        for how in ("plain", "dynamo-first")
    }
    assert runs["plain"]["dynamo"] is False  # 0.9 s of start-up saved
    assert runs["dynamo-first"]["dynamo"] is True
    assert runs["plain"]["profiles"] == runs["dynamo-first"]["profiles"]
    assert all(f > 0 and t > f for f, t in runs["plain"]["profiles"].values())

"""Splittable models, per-cut profiles and fits, and SplitFed local training (SPEC D)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedtempo.client.local import LocalSpec, train_local
from fedtempo.errors import ConfigError
from fedtempo.models import build_model, profile_model
from fedtempo.params import flatten
from fedtempo.split import (
    check_cut,
    client_numel,
    fit_curve,
    profile_cuts,
    splittable,
)
from fedtempo.split.training import train_split

SHAPE = (1, 28, 28)


def _model(name: str) -> torch.nn.Sequential:
    return splittable(name, build_model(name, SHAPE, 10, torch.Generator().manual_seed(0)))


def test_the_split_form_keeps_the_parameters_and_their_order() -> None:
    plain = build_model("cnn-s", SHAPE, 10, torch.Generator().manual_seed(0))
    split = splittable("cnn-s", plain)
    assert [n for n, _ in split.named_children()] == ["conv1", "conv2", "fc1", "fc2"]
    assert torch.equal(flatten(split), flatten(plain))
    x = torch.randn(3, *SHAPE)
    assert torch.equal(split(x), plain(x))
    assert client_numel(split, 1) == 8 * 25 + 8 and client_numel(split, 4) == 20_522
    with pytest.raises(ConfigError, match=r"cut 5 is not a legal cut point \(1..4: 1=conv1"):
        check_cut(split, 5)
    with pytest.raises(ConfigError, match="'mlp' has no split points"):
        splittable("mlp", build_model("mlp", SHAPE, 10, torch.Generator()))


@pytest.mark.parametrize("name", ["cnn-s", "effnetv2-tiny"])
def test_per_cut_profiles_add_up_to_the_whole_model(name: str) -> None:
    model = _model(name)
    prof = profile_cuts(model, SHAPE)
    whole = profile_model(name, model, SHAPE)
    assert prof.total_flops == whole.train_flops
    assert np.all(np.diff(prof.client_flops) > 0)
    assert prof.server_flops[-1] == 0 and prof.smashed_bits[-1] == 0  # plain FL at l = L
    assert prof.client_bits[-1] == whole.size_bits
    if name == "cnn-s":  # activations after conv1: 8 x 12 x 12 floats
        assert prof.smashed_bits[0] == 32 * 8 * 12 * 12


def test_fits_report_r_squared() -> None:
    cuts = np.arange(1.0, 8.0)
    quad = 3 * cuts**2 - cuts + 2
    assert fit_curve(cuts, quad, "poly", degree=2).r2 == pytest.approx(1.0)
    decay = 5 * np.exp(-0.7 * cuts) + 1
    fit = fit_curve(cuts, decay, "exp")
    assert fit.r2 == pytest.approx(1.0, abs=1e-9)
    assert fit(2.5) == pytest.approx(5 * np.exp(-1.75) + 1, rel=1e-6)
    steps = np.array([0, 0, 1, 1, 5, 5, 6.0])
    spline = fit_curve(cuts, steps, "spline")
    assert spline.r2 == 1.0 and np.all(np.diff(spline(np.linspace(1, 7, 50))) >= -1e-12)
    assert fit_curve(cuts, steps, "poly", degree=1).r2 < 0.95
    with pytest.raises(ValueError, match="unknown fit family"):
        fit_curve(cuts, steps, "cubic")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["cnn-s", "effnetv2-tiny"])
def test_split_training_is_fedavg_local_training_at_every_cut(name: str) -> None:
    model = _model(name)
    start = flatten(model).clone()
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(40, *SHAPE, generator=gen), torch.randint(0, 10, (40,), generator=gen)
    spec = LocalSpec(epochs=1, batch_size=16, lr=0.05, momentum=0.9, weight_decay=1e-4)
    ref, steps, loss = train_local(model, start, x, y, spec, torch.Generator().manual_seed(5))
    for cut in range(1, len(model) + 1):
        got = train_split(model, cut, start, x, y, spec, torch.Generator().manual_seed(5))
        assert torch.equal(got[0], ref), f"cut {cut}"
        assert got[1:] == (steps, loss)
    with pytest.raises(ConfigError, match="prox_mu"):
        train_split(model, 1, start, x, y, LocalSpec(prox_mu=0.1), torch.Generator())

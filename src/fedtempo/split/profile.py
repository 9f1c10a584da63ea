"""Per-cut profiles of a splittable model and their continuous fits (SPEC section D).

For cut l (client holds blocks 1..l): client FLOPs per sample Phi_c(l) (forward + backward),
server FLOPs Phi_s(l) = Phi_tot - Phi_c(l), smashed-data bits per sample S(l) (the activations
that cross the link each way; 0 at l = L, where nothing crosses) and client-model bits M(l).
Labels also go up with the activations; at one int64 per sample against thousands of bits of
activations they are left out of S.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from fedtempo.models.profile import count_flops

Family = Literal["poly", "exp", "spline"]


@dataclass(frozen=True)
class CutProfile:
    """Arrays indexed by cut - 1 (cuts 1..L)."""

    names: tuple[str, ...]  # block names, in order
    client_flops: np.ndarray  # per sample, forward + backward of blocks 1..l
    server_flops: np.ndarray  # per sample, the rest
    smashed_bits: np.ndarray  # per sample, each way
    client_bits: np.ndarray  # the client part's parameters (float32)

    @property
    def cuts(self) -> np.ndarray:
        return np.arange(1, len(self.names) + 1)

    @property
    def total_flops(self) -> float:
        return float(self.client_flops[-1])


def _block_flops(block: nn.Module, x: torch.Tensor, needs_input_grad: bool) -> float:
    """Forward + backward FLOPs of one block on ``x`` (the gradient for the block's input is
    counted when an earlier block needs it, as in the unsplit model)."""
    return float(count_flops(block, x.detach().requires_grad_(needs_input_grad))[1])


def profile_cuts(model: nn.Sequential, input_shape: tuple[int, ...]) -> CutProfile:
    """Measure every block of ``model`` with FlopCounterMode on one sample."""
    x = torch.zeros((1, *input_shape))
    flops, smashed, bits = [], [], []
    was_training = model.training
    model.train()
    for i, block in enumerate(model):
        flops.append(_block_flops(block, x, i > 0))
        with torch.no_grad():
            x = block(x)
        smashed.append(32.0 * x[0].numel())
        bits.append(32.0 * sum(p.numel() for p in block.parameters()))
    model.train(was_training)
    client = np.cumsum(flops)
    smashed[-1] = 0.0  # l = L: the client trains the whole model, nothing crosses per batch
    return CutProfile(
        names=tuple(name for name, _ in model.named_children()),
        client_flops=client,
        server_flops=client[-1] - client,
        smashed_bits=np.asarray(smashed),
        client_bits=np.cumsum(bits),
    )


@dataclass(frozen=True)
class Fit:
    """A continuous fit of a per-cut quantity; ``r2`` on the profiled cuts."""

    family: Family
    predict: Callable[[np.ndarray], np.ndarray]
    r2: float

    def __call__(self, cut: float | np.ndarray) -> np.ndarray:
        return np.asarray(self.predict(np.asarray(cut, dtype=np.float64)))


def r_squared(y: np.ndarray, y_hat: np.ndarray) -> float:
    ss_res = float(np.sum((y - y_hat) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0.0:
        return 1.0 if ss_res == 0.0 else 0.0
    return 1.0 - ss_res / ss_tot


def fit_curve(cuts: np.ndarray, values: np.ndarray, family: Family, degree: int = 2) -> Fit:
    """Fit ``values`` against ``cuts``: a polynomial of ``degree``, a e^{-b l} + c, or a
    monotone (PCHIP) spline, which passes through every point (R^2 = 1 by construction)."""
    x, y = np.asarray(cuts, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if family == "poly":
        poly = np.polynomial.Polynomial.fit(x, y, deg=min(degree, len(x) - 1))
        return Fit(family, poly, r_squared(y, poly(x)))
    if family == "spline":
        from scipy.interpolate import PchipInterpolator  # here: importing scipy costs ~0.8 s

        spline = PchipInterpolator(x, y)
        return Fit(family, spline, r_squared(y, spline(x)))
    if family == "exp":
        return _fit_exp(x, y)
    raise ValueError(f"unknown fit family {family!r} (allowed: poly, exp, spline)")


def _fit_exp(x: np.ndarray, y: np.ndarray) -> Fit:
    from scipy.optimize import OptimizeWarning, curve_fit

    def f(t: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
        return a * np.exp(-b * t) + c

    scale = float(np.max(np.abs(y))) or 1.0
    try:
        with warnings.catch_warnings():  # an exact fit has no covariance estimate: fine here
            warnings.simplefilter("ignore", OptimizeWarning)
            (a, b, c), _ = curve_fit(f, x, y / scale, p0=(1.0, 0.5, 0.0), maxfev=20_000)
    except RuntimeError:  # no convergence: the best constant, reported with its (zero) R^2
        mean = float(y.mean())
        return Fit("exp", lambda t: np.full_like(t, mean), r_squared(y, np.full_like(y, mean)))

    def predict(t: np.ndarray) -> np.ndarray:
        return scale * f(t, a, b, c)

    return Fit("exp", predict, r_squared(y, predict(x)))

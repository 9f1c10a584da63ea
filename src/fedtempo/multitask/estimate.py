"""Estimating the constants of the MA-FL surrogate Psi_m (see ``fedtempo.alloc.mafl``).

Two server-side measurements per model, on samples of the devices' training data:

- ``probe``: at the global model, each device's gradient on a few of its samples gives the
  data-weighted mean gradient g, the gradient dissimilarity zeta^2 = sum rho_n ||g_n - g||^2
  (less its sampling noise), each device's loss relative to the mean, the per-sample gradient
  variance sigma^2 (``torch.func`` vmap) and, against the previous global model, the relative
  change of the gradient over one server step xi = ||g - g_prev|| / ||g||; given the training
  learning rate, also the noise scale of an SGD step weighted by the curvature (Hessian-vector
  products), which then stands for B_noise instead of sigma^2 / g^2;
- ``probe_round``: a few devices train from the global model on their own data for j = 1, 2, 4,
  ... local steps at the nominal batch; the loss of their data-weighted mean model on a pooled
  evaluation sample, as a function of j, is fitted by the surrogate's own form for one round,
  G - G / (1 + k c gamma0 log(1 + j / gamma0)), with c the round's batch and sampling quality:
  the rate k and the local-drift horizon gamma0. Given samples of the devices that did not
  train in the round (``held_out``; a study), the same mean model's loss on them is recorded:
  local steps that fit the round's devices better but the rest of the population worse show
  there (the drift decay delta, ``fit_drift``), while the pooled sample, mostly the round's
  own devices' data, keeps falling.

These probes stand for what a deployment would learn from its warm-up and ongoing rounds; the
simulator does not charge their energy to the devices.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

from fedtempo.alloc.mafl import TaskTerms, batch_factor
from fedtempo.client.local import LocalSpec, train_local
from fedtempo.params import load_vector

Data = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Probe:
    grad_sq: float  # g^2
    variance: float  # sigma^2, per sample
    dissimilarity: float  # zeta^2
    staleness: float  # xi
    devices: int  # N
    relative_loss: np.ndarray  # per device: its loss over the data-weighted mean loss
    device_dissimilarity: np.ndarray  # per device: ||g_n - g||^2 less its sampling noise
    curved_noise: float | None = None  # B_noise as the curvature sees it (None: not measured)

    @property
    def relative_dissimilarity(self) -> np.ndarray:
        """z_n = zeta_n^2 / (zeta_n^2 + g^2), in [0, 1)."""
        d = self.device_dissimilarity
        return np.asarray(d / (d + self.grad_sq))


def _gradient(
    model: nn.Module, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> tuple[float, torch.Tensor]:
    load_vector(model, params)
    model.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()  # type: ignore[no-untyped-call]
    flat = [
        p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel())
        for p in model.parameters()
    ]
    return float(loss.detach()), torch.cat(flat).detach().clone()


def _per_sample_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each sample's loss gradient, flattened (samples x parameters)."""
    named = {k: v.detach() for k, v in model.named_parameters()}

    def loss_of(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, p, (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(out, yi.unsqueeze(0))

    grads = vmap(grad(loss_of), in_dims=(None, 0, 0))(named, x, y)
    return torch.cat([g.reshape(len(y), -1) for g in grads.values()], dim=1)


def _per_sample_variance(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    flat = _per_sample_gradients(model, x, y)
    return float(((flat - flat.mean(dim=0)) ** 2).sum(dim=1).mean())


def curved_noise_scale(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float) -> float:
    """B_noise as an SGD step of learning rate ``lr`` feels it, on the samples (x, y). A step at
    batch B lowers the loss by lr g^2 - (lr^2 / 2) (g'Hg + tr(H Sigma) / B) to second order
    (H the Hessian, Sigma the per-sample gradient covariance), so its worth relative to a
    full-batch step is 1 - c / B with c = (lr / 2) tr(H Sigma) / (g^2 - (lr / 2) g'Hg): the
    first-order match of B / (B + B_noise). Unlike sigma^2 / g^2, noise along flat directions
    costs nothing here. Hessian-vector products by ``torch.func.jvp``; 1e6 where the full step
    itself would not lower the loss."""
    named = {k: v.detach() for k, v in model.named_parameters()}
    shapes = [v.shape for v in named.values()]

    def loss_all(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return nn.functional.cross_entropy(functional_call(model, p, (x,)), y)

    def hessian_times(v: torch.Tensor) -> torch.Tensor:
        parts = torch.split(v, [int(np.prod(s)) for s in shapes])
        pieces = zip(named, shapes, parts, strict=True)
        tangent = {k: t.reshape(s) for k, s, t in pieces}
        out = jvp(grad(loss_all), (named,), (tangent,))[1]
        return torch.cat([t.reshape(-1) for t in out.values()])

    flat = _per_sample_gradients(model, x, y)
    mean = flat.mean(dim=0)
    noise = flat - mean
    curvature = float(mean @ hessian_times(mean))
    spread = float(np.mean([float(n @ hessian_times(n)) for n in noise]))
    useful = float(mean @ mean) - lr / 2 * curvature
    if useful <= 0:
        return 1e6
    return float(min(max(lr / 2 * spread / useful, 0.0), 1e6))


def _mean_gradient(
    model: nn.Module, params: torch.Tensor, pools: Sequence[Data], weights: np.ndarray
) -> tuple[torch.Tensor, list[torch.Tensor], np.ndarray]:
    measured = [_gradient(model, params, x, y) for x, y in pools]
    per_device = [g for _, g in measured]
    mean = sum(float(w) * g for w, g in zip(weights, per_device, strict=True))
    assert isinstance(mean, torch.Tensor)
    return mean, per_device, np.array([loss for loss, _ in measured])


def probe(
    model: nn.Module,
    params: torch.Tensor,
    previous: torch.Tensor | None,
    pools: Sequence[Data],
    weights: np.ndarray,
    per_sample: int = 64,
    lr: float | None = None,
) -> Probe:
    """Measure g^2, sigma^2, zeta^2, xi and the relative losses at ``params`` from the devices'
    samples ``pools`` (one (x, y) per device, data weights ``weights`` summing to 1);
    ``previous`` is the global model one server step earlier (None: xi = 0); with the learning
    rate ``lr``, also the curvature-weighted noise scale (``curved_noise_scale``). ``model`` is
    a workspace."""
    model.train()
    weights = np.asarray(weights, dtype=float) / float(np.sum(weights))
    g, per_device, losses = _mean_gradient(model, params, pools, weights)
    x_all = torch.cat([x for x, _ in pools])[:per_sample]
    y_all = torch.cat([y for _, y in pools])[:per_sample]
    load_vector(model, params)
    variance = _per_sample_variance(model, x_all, y_all)
    sizes = np.array([len(y) for _, y in pools], dtype=float)
    pairs = zip(per_device, sizes, strict=True)
    each = np.array([float((gn - g).pow(2).sum()) - variance / n for gn, n in pairs])
    spread = float(weights @ each)
    g_sq = max(float(g.pow(2).sum()) - variance / float(sizes.sum()), 1e-12)
    xi = 0.0
    if previous is not None and not torch.equal(previous, params):
        g_prev, _, _ = _mean_gradient(model, previous, pools, weights)
        xi = float((g - g_prev).norm()) / g_sq**0.5
    relative = losses / max(float(weights @ losses), 1e-12)
    curved = None
    if lr is not None:
        load_vector(model, params)
        curved = curved_noise_scale(model, x_all, y_all, lr)
    each = np.maximum(each, 0.0)
    return Probe(g_sq, variance, max(spread, 0.0), xi, len(pools), relative, each, curved)


STEP_GRID = (1, 2, 4, 8, 16, 32, 64)


def evaluation_loss(model: nn.Module, params: torch.Tensor, data: Data) -> float:
    """The cross-entropy of ``model`` at ``params`` on ``data``, in eval mode."""
    load_vector(model, params)
    model.eval()
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(data[0]), data[1]))


@dataclass(frozen=True)
class RoundCurve:
    """The probe round at batch size ``batch``: evaluation loss after j local steps (``steps``;
    j = 0 first) of the devices' data-weighted mean model, and their data share; ``held_out``:
    that model's loss on samples of the devices that did not train (None: not measured)."""

    steps: np.ndarray
    loss: np.ndarray
    share: float
    batch: int
    held_out: np.ndarray | None = None  # the same model's loss on the held-out devices' data


def probe_round(
    model: nn.Module,
    params: torch.Tensor,
    devices: Sequence[Data],
    shares: np.ndarray,
    evaluation: Data,
    spec: LocalSpec,
    generators: Sequence[torch.Generator],
    steps: Sequence[int] = STEP_GRID,
    held_out: Data | None = None,
) -> RoundCurve:
    """Each of ``devices`` (data shares ``shares`` of the population) trains from ``params`` on
    its data (``spec``'s lr and batch); after every j in ``steps`` the data-weighted mean of
    their models is evaluated on ``evaluation`` (and on ``held_out``, samples of the devices
    that do not train, where given)."""
    shares = np.asarray(shares, dtype=float)
    weights = shares / float(shares.sum())
    current = [params.clone() for _ in devices]
    losses, done = [evaluation_loss(model, params, evaluation)], 0
    others = [] if held_out is None else [evaluation_loss(model, params, held_out)]
    for j in steps:
        for i, (x, y) in enumerate(devices):
            run = dataclasses.replace(spec, iterations=j - done)
            delta, _, _ = train_local(model, current[i], x, y, run, generators[i])
            current[i] = current[i] + delta
        done = j
        mean = sum(float(w) * c for w, c in zip(weights, current, strict=True))
        assert isinstance(mean, torch.Tensor)
        losses.append(evaluation_loss(model, mean, evaluation))
        if held_out is not None:
            others.append(evaluation_loss(model, mean, held_out))
    return RoundCurve(
        np.array([0, *steps], dtype=float),
        np.array(losses),
        float(shares.sum()),
        spec.batch_size,
        None if held_out is None else np.array(others),
    )


LOCAL_GRID = np.geomspace(1.0, 1e4, 49)
RATE_GRID = np.geomspace(1e-6, 1e2, 161)
DECAY_GRID = np.concatenate([[0.0], np.geomspace(1e-3, 0.5, 28)])


DRIFT_GRID = np.concatenate([[0.0], np.geomspace(1e-3, 2.0, 40)])


def fit_curve(
    curve: tuple[np.ndarray, np.ndarray],
    quality: float,
    local_grid: np.ndarray,
    decay_grid: np.ndarray,
) -> tuple[float, float, float]:
    """(k, gamma0, delta) on grids: least squares of the decrease G - loss(j) of ``curve``
    (steps, loss; G = loss at j = 0) against G - G / (1 + k c h(j)), h(j) = gamma0 log(1 + j /
    gamma0) - delta j, c = ``quality``; delta > 0 is kept only where it cuts the error by a
    fifth (a grid's rounding alone must not invent a decay)."""
    steps, loss = curve
    gap = float(loss[0])
    decrease = gap - loss[1:]
    j = steps[1:]
    best = (np.inf, RATE_GRID[0], float(local_grid[0]), 0.0)
    for delta in decay_grid:
        for g0 in local_grid:
            moved = quality * (g0 * np.log1p(j / g0) - delta * j)
            with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
                model = gap - gap / (1 + RATE_GRID[:, None] * moved[None, :])
                err = ((model - decrease[None, :]) ** 2).sum(axis=1)
            valid = np.isfinite(err) & (1 + RATE_GRID[:, None] * moved > 0).all(axis=1)
            err = np.where(valid, err, np.inf)
            i = int(np.argmin(err))
            bar = best[0] * (0.8 if delta > 0 and best[3] == 0 else 1 - 1e-6) - 1e-15
            if err[i] < bar:
                best = (float(err[i]), float(RATE_GRID[i]), float(g0), float(delta))
    return best[1], best[2], best[3]


def fit_round(curve: RoundCurve, quality: float) -> tuple[float, float, float, float]:
    """(G, k, gamma0, delta): G the loss before the round; k, gamma0 and delta fitted to the
    pooled curve (``fit_curve``); delta > 0 lets the curve turn down (a loss that rises again
    after some local steps). A round that did not lower the loss gives the smallest k on the
    grid."""
    rate, local, decay = fit_curve((curve.steps, curve.loss), quality, LOCAL_GRID, DECAY_GRID)
    return float(curve.loss[0]), rate, local, decay


TRANSFER_MIN = 0.25


def carried_over(curve: RoundCurve) -> float:
    """How much of the probe round's gain carries over to the devices that did not train: the
    held-out loss's largest drop below its start over the pooled loss's (1 where the pooled
    loss did not drop, or the held-out one was not measured). In W-mafl the MNIST models carry
    0.4 to 3.2 of it over, the Synthetic logistic regression 0 to 0.09: each device's steps
    fit its own decision rule and nobody else's."""
    if curve.held_out is None:
        return 1.0
    pooled = float(curve.loss[0] - curve.loss[1:].min())
    others = float(curve.held_out[0] - curve.held_out[1:].min())
    return max(others, 0.0) / pooled if pooled > 0 else 1.0


def fit_drift(steps: np.ndarray, held_out: np.ndarray, local_steps: float) -> float:
    """delta from the held-out curve (the round's mean model on the devices that did not train)
    at the drift horizon gamma0 = ``local_steps``, with the rate free (``fit_curve``): 0 where
    that loss keeps falling, the decay that puts the drift factor's peak where it turns, and
    1 or more (the factor falls from the first step) where it never falls below its start."""
    return fit_curve((steps, held_out), 1.0, np.array([float(local_steps)]), DRIFT_GRID)[2]


def terms_from(
    probe_: Probe,
    curve: RoundCurve,
    samples: float,
    weight: float = 1.0,
    relative_loss: np.ndarray | None = None,
    dissimilarity: np.ndarray | None = None,
    local_steps_min: float = 0.0,
) -> TaskTerms:
    """TaskTerms from the probes: B_noise (as the curvature sees it where ``probe_`` measured
    that, else sigma^2 / g^2), A0 = zeta^2 / (N g^2) and xi from ``probe_``; G, k and gamma0
    from the probe round ``curve`` (whose quality c is its share's A / (A + A0) times its
    batch's B / (a B + B_noise); ``samples``: a typical device's data), gamma0 at least
    ``local_steps_min``; delta from the pooled curve, or, where less than ``TRANSFER_MIN`` of
    the round's gain carries over to the held-out devices (``carried_over``), from the held-out
    curve (``fit_drift``, at that gamma0): a model whose local steps help only the device that
    takes them is planned with the drift the rest of the population sees. (Where the gain does
    carry over, the held-out curve flattens within the probe's 64 steps while round-robin's runs
    still gain from 40 to 100 iterations, so it would cap those models too early.)
    ``relative_loss`` and ``dissimilarity`` (N, or None) are passed through."""
    batch_noise = probe_.variance / probe_.grad_sq
    if probe_.curved_noise is not None:
        batch_noise = probe_.curved_noise
    spread = probe_.dissimilarity / (probe_.devices * probe_.grad_sq)
    per_step = batch_factor(np.array([float(curve.batch)]), np.array([samples]), batch_noise)
    quality = float(per_step[0]) * curve.share / (curve.share + max(spread, 1e-9))
    gap, rate, local, decay = fit_round(curve, quality)
    local = max(local, local_steps_min)
    if curve.held_out is not None and carried_over(curve) < TRANSFER_MIN:
        decay = fit_drift(curve.steps, curve.held_out, local)
    return TaskTerms(
        gap=max(gap, 0.0),
        rate=rate,
        spread=spread,
        batch_noise=batch_noise,
        local_steps=local,
        staleness=probe_.staleness,
        weight=weight,
        relative_loss=relative_loss,
        drift_decay=decay,
        dissimilarity=dissimilarity,
    )

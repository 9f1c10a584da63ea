"""Estimating the constants of the MA-FL surrogate Psi_m from warm-up rounds.

``probe`` measures, at a model vector and on a sample of training data, the quantities the
descent lemma of local SGD needs: the gradient's squared norm g^2, the per-sample gradient
variance sigma^2 and a smoothness estimate L = ||grad(w + u) - grad(w)|| / ||u|| along the
server's last step u. ``terms_from`` turns them, with the loss decrease seen over the warm-up,
into ``TaskTerms`` (see ``fedtempo.alloc.mafl`` for the formulas).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from fedtempo.alloc.mafl import TaskTerms
from fedtempo.params import load_vector


@dataclass(frozen=True)
class Probe:
    loss: float
    grad_sq: float  # g^2
    variance: float  # sigma^2, per sample
    smoothness: float  # L
    step_sq: float  # u^2, the server step's squared norm


def _gradient(
    model: nn.Module, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> tuple[float, torch.Tensor]:
    load_vector(model, params)
    model.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    flat = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
    return loss.item(), flat.detach().clone()


def _per_sample_variance(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    named = {k: v.detach() for k, v in model.named_parameters()}

    def loss_of(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, p, (xi.unsqueeze(0),))
        return nn.functional.cross_entropy(out, yi.unsqueeze(0))

    grads = vmap(grad(loss_of), in_dims=(None, 0, 0))(named, x, y)
    flat = torch.cat([g.reshape(len(y), -1) for g in grads.values()], dim=1)
    return float(((flat - flat.mean(dim=0)) ** 2).sum(dim=1).mean())


def probe(
    model: nn.Module,
    params: torch.Tensor,
    previous: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    per_sample: int = 32,
) -> Probe:
    """Measure loss, g^2, sigma^2 (on the first ``per_sample`` samples) and L along the step
    from ``previous`` to ``params`` at ``params``, on (x, y). ``model`` is a workspace."""
    model.train()
    loss, g = _gradient(model, params, x, y)
    step = params - previous
    u_sq = float(step.pow(2).sum())
    smooth = 0.0
    if u_sq > 0:
        _, g_prev = _gradient(model, previous, x, y)
        smooth = float((g - g_prev).norm()) / u_sq**0.5
    load_vector(model, params)
    variance = _per_sample_variance(model, x[:per_sample], y[:per_sample])
    return Probe(loss, float(g.pow(2).sum()), variance, smooth, u_sq)


def terms_from(
    probe_: Probe,
    lr: float,
    gap_before: float,
    gap_after: float,
    progress: float,
    weight: float = 1.0,
) -> TaskTerms:
    """TaskTerms for step ``lr``: rate k from G_before / G_after = 1 + k P over the warm-up's
    data-weighted local steps P (at least 1e-4, so that a model that did not improve still
    counts); noise / drift / staleness from the descent lemma, in the units of the measured
    progress: the lemma's per-step gain is lr g^2, the warm-up measured (G_before - G_after) / P
    per step, and every error term is scaled by their ratio (the lemma's constants are worst
    cases; only their proportions are kept)."""
    rate = max((gap_before / max(gap_after, 1e-12) - 1.0) / max(progress, 1e-12), 1e-4)
    measured = max(gap_before - gap_after, 0.0) / max(progress, 1e-12)
    scale = measured / max(lr * probe_.grad_sq, 1e-12)
    big_l = probe_.smoothness
    return TaskTerms(
        gap=max(gap_after, 0.0),
        rate=rate,
        noise=scale * big_l * lr**2 * probe_.variance / 2,
        drift=scale * lr**3 * big_l**2 * probe_.grad_sq / 6,
        staleness=scale * lr * big_l**2 * probe_.step_sq / 2,
        weight=weight,
    )

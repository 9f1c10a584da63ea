"""SplitFed local training: the client part trains on the device, the server part on the edge
server, and per iteration the activations (with the labels) go up and their gradient comes back.

Per batch: the client runs its blocks forward; the server takes the activations as a leaf,
finishes the forward pass, computes the loss, back-propagates, steps its own optimizer and
returns the gradient of the activations; the client back-propagates that gradient through its
blocks and steps. Both parts use the same SGD settings and the same batches as ``train_local``,
so the pair computes exactly the update FedAvg's local training computes (same operations, same
order per parameter): the "no accuracy loss" of split FL.
"""

from __future__ import annotations

import torch
from torch import nn

from fedtempo.client.local import LocalSpec, Sgd, batches
from fedtempo.errors import ConfigError
from fedtempo.params import flatten, load_vector
from fedtempo.split.models import client_part, server_part


def _sgd(module: nn.Module, spec: LocalSpec) -> Sgd | None:
    params = list(module.parameters())
    return Sgd(params, spec) if params else None


def train_split(
    model: nn.Sequential,
    cut: int,
    start: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: LocalSpec,
    generator: torch.Generator,
) -> tuple[torch.Tensor, int, float]:
    """Split training of ``model`` (a workspace, overwritten) at ``cut`` from ``start``.

    Returns (delta of the whole vector, steps, mean loss), as ``train_local`` does.
    """
    if spec.prox_mu > 0:
        raise ConfigError("train.prox_mu: SplitFed training has no proximal term (set it to 0)")
    load_vector(model, start)
    steps = spec.num_steps(len(y))
    if steps == 0:
        return torch.zeros_like(start), 0, float("nan")
    client, server = client_part(model, cut), server_part(model, cut)
    model.train()
    opt_c, opt_s = _sgd(client, spec), _sgd(server, spec)
    loss_fn = nn.CrossEntropyLoss()
    total = torch.zeros((), dtype=torch.float64)
    for idx in batches(len(y), spec, steps, generator):
        for opt in (opt_c, opt_s):
            if opt is not None:
                opt.zero_grad()
        smashed = client(x[idx])  # client forward; goes up the link with y[idx]
        leaf = smashed.detach().requires_grad_(len(server) > 0)
        loss = loss_fn(server(leaf) if len(server) else smashed, y[idx])
        loss.backward()  # server backward (or the whole model when nothing is split)
        if opt_s is not None:
            opt_s.step()
        if len(server):
            smashed.backward(leaf.grad)  # the activations' gradient comes down the link
        if opt_c is not None:
            opt_c.step()
        total += loss.detach()
    return flatten(model) - start, steps, float(total) / steps

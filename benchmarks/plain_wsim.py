"""W-sim without a framework: the physical reference (a plain PyTorch loop).

Same work as configs/w_sim.toml: MNIST, 100 clients (Dirichlet 0.5 seed 0), cnn-s, rounds of
sampled clients doing 1 local epoch (batch 32, SGD lr 0.05), sample-weighted averaging, one
evaluation at the end. Prints {"accuracy": ...} as JSON. Run by benchmarks/w_sim.py.

    python benchmarks/plain_wsim.py ROUNDS CLIENTS_PER_ROUND THREADS
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from fedtempo.data.datasets import load_idx_pair
from fedtempo.data.partition import dirichlet
from fedtempo.models import build_model


def main(rounds: int, per_round: int, threads: int) -> float:
    torch.set_num_threads(threads)
    data = load_idx_pair("mnist")
    parts = dirichlet(data.train.y.numpy(), 100, 0.5, 0)
    rng = np.random.default_rng(0)
    model = build_model("cnn-s", (1, 28, 28), 10, torch.Generator().manual_seed(0))
    global_vec = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(rounds):
        acc = torch.zeros_like(global_vec)
        chosen = rng.choice(100, size=per_round, replace=False)
        total = sum(len(parts[c]) for c in chosen)
        for c in chosen:
            torch.nn.utils.vector_to_parameters(global_vec.clone(), model.parameters())
            opt = torch.optim.SGD(model.parameters(), lr=0.05)
            idx = torch.from_numpy(parts[c])
            x, y = data.train.x[idx], data.train.y[idx]
            for b in torch.randperm(len(idx)).split(32):
                opt.zero_grad()
                loss_fn(model(x[b]), y[b]).backward()
                opt.step()
            local = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
            acc += local * (len(idx) / total)
        global_vec = acc
    torch.nn.utils.vector_to_parameters(global_vec, model.parameters())
    with torch.no_grad():
        pred = model(data.test.x).argmax(1)
    return float((pred == data.test.y).float().mean())


if __name__ == "__main__":
    r, k, t = (int(a) for a in sys.argv[1:4])
    print(json.dumps({"accuracy": main(r, k, t)}))

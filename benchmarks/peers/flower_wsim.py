"""W-sim in Flower's simulation engine: the same workload as configs/w_sim.toml and
benchmarks/plain_wsim.py, written as a Flower app (a ClientApp and a ServerApp on the Message
API, FedAvg from flwr.serverapp.strategy), run by ``flwr.simulation.run_simulation`` on Ray.

MNIST read from the IDX files, the clients' index lists given by benchmarks/w_sim.py (the same
Dirichlet(0.5) partition of 100 clients as the other variants), cnn-s, 1 local epoch of batch
32 at SGD lr 0.05, 10 clients per round sampled by Flower, sample-weighted averaging, one
evaluation at the end. One torch thread per ClientApp and one CPU per actor, so Ray runs as
many ClientApps at once as there are cores. Prints {"accuracy": ...} as JSON.

The app is a module (Ray's actors import it by name); benchmarks/peers/run_flower_wsim.py runs
it, in Flower's own environment (benchmarks/peers/setup_flower.sh), not fedtempo's.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from torch import nn

CLIENTS = 100


def cnn_s() -> nn.Module:
    """cnn-s of BENCHMARKS.md (20,522 parameters)."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(256, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def _idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


@functools.cache
def mnist(root: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of ``split`` ("train" or "t10k"), x as N x 1 x 28 x 28 normalised as fedtempo
    does (mean 0.1307, standard deviation 0.3081)."""
    x = _idx(Path(root) / f"{split}-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    x = (x - 0.1307) / 0.3081
    y = _idx(Path(root) / f"{split}-labels-idx1-ubyte.gz").astype(np.int64)
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y)


@functools.cache
def partition(path: str) -> list[np.ndarray]:
    with np.load(path) as data:
        return [data[f"client{c}"] for c in range(CLIENTS)]


client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    torch.set_num_threads(1)
    root, parts = os.environ["WSIM_MNIST"], os.environ["WSIM_PARTITION"]
    client = int(context.node_config["partition-id"])
    x_all, y_all = mnist(root, "train")
    idx = torch.from_numpy(partition(parts)[client])
    x, y = x_all[idx], y_all[idx]
    model = cnn_s()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loss_fn = nn.CrossEntropyLoss()
    for b in torch.randperm(len(idx)).split(32):
        opt.zero_grad()
        loss_fn(model(x[b]), y[b]).backward()
        opt.step()
    metrics = MetricRecord({"num-examples": len(idx)})
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
    return Message(content=content, reply_to=msg)


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    rounds, per_round = int(os.environ["WSIM_ROUNDS"]), int(os.environ["WSIM_PER_ROUND"])
    torch.manual_seed(0)
    model = cnn_s()
    strategy = FedAvg(
        fraction_train=per_round / CLIENTS,
        fraction_evaluate=0.0,
        min_train_nodes=per_round,
        min_available_nodes=CLIENTS,
    )
    start = ArrayRecord(model.state_dict())
    result = strategy.start(grid=grid, initial_arrays=start, num_rounds=rounds)
    model.load_state_dict(result.arrays.to_torch_state_dict())
    x, y = mnist(os.environ["WSIM_MNIST"], "t10k")
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())
    Path(os.environ["WSIM_OUT"]).write_text(json.dumps({"accuracy": accuracy}))

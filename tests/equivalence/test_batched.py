"""Batched clients (torch.func vmap) equal sequential local training up to float rounding."""

import itertools

import numpy as np
import pytest
import torch

from fedtempo.client.batched import train_batched
from fedtempo.client.local import LocalSpec, train_local
from fedtempo.experiment.config import load
from fedtempo.experiment.results import run_experiment
from fedtempo.models import build_model
from fedtempo.params import flatten
from fedtempo.testing import tiny_dataset


@pytest.mark.parametrize(
    "spec",
    [
        LocalSpec(epochs=2, batch_size=16, lr=0.1),
        LocalSpec(epochs=1, batch_size=7, lr=0.05, momentum=0.9, weight_decay=1e-3),
        LocalSpec(iterations=9, batch_size=8, lr=0.1, prox_mu=0.5),
    ],
    ids=["plain", "momentum-wd", "iterations-prox"],
)
@pytest.mark.parametrize("model_name", ["logreg", "mlp"])
def test_batched_equals_sequential(spec: LocalSpec, model_name: str) -> None:
    data = tiny_dataset(num_samples=300)
    model = build_model(
        model_name, data.input_shape, data.num_classes, torch.Generator().manual_seed(0)
    )
    base = flatten(model)
    sizes = [37, 80, 5, 120, 1]  # unequal: different step counts and short last batches
    offsets = np.cumsum([0, *sizes])
    parts = [(data.x[a:b], data.y[a:b]) for a, b in itertools.pairwise(offsets)]
    starts = torch.stack([base + 0.01 * c for c in range(len(sizes))])  # different start models
    epochs = [None, 3, None, 1, 2]
    seq = [
        train_local(model, starts[c], x, y, spec, torch.Generator().manual_seed(c), epochs[c])
        for c, (x, y) in enumerate(parts)
    ]
    bat = train_batched(
        model,
        starts,
        parts,
        spec,
        [torch.Generator().manual_seed(c) for c in range(len(sizes))],
        epochs,
    )
    for (d1, s1, l1), (d2, s2, l2) in zip(seq, bat, strict=True):
        assert s1 == s2
        assert torch.allclose(d1, d2, rtol=1e-4, atol=1e-5)
        assert l1 == pytest.approx(l2, rel=1e-4)


def test_batching_executor_in_a_run_matches_inline_and_is_reproducible() -> None:
    base = [
        "data.dataset=synthetic",
        "partition.scheme=natural",
        "partition.num_clients=12",
        "model.name=logreg",
        "server.algorithm=fedbuff",
        "server.max_updates=60",
        "server.fedbuff.buffer_size=4",
    ]
    _, off = run_experiment(load(None, [*base, "batch_clients=off"]), None)
    _, on = run_experiment(load(None, [*base, "batch_clients=on"]), None)
    _, again = run_experiment(load(None, [*base, "batch_clients=auto"]), None)  # logreg: on
    assert torch.allclose(off.final_params[0], on.final_params[0], rtol=1e-4, atol=1e-5)
    assert torch.equal(on.final_params[0], again.final_params[0])


def test_the_batching_executor_fuses_only_clients_of_similar_length() -> None:
    """A batch takes as many steps as its longest client, so a training is fused only with
    pending peers within STEP_SPREAD of its steps, and runs alone (as inline) when fewer than
    MIN_BATCH such clients wait; every result equals inline up to float rounding."""
    from fedtempo.algorithms.jobs import TrainingJob
    from fedtempo.client.trainer import ClientTrainer
    from fedtempo.rng import Streams
    from fedtempo.sim.executor import MIN_BATCH, STEP_SPREAD, BatchingExecutor, InlineExecutor

    assert (MIN_BATCH, STEP_SPREAD) == (4, 2.0)
    data = tiny_dataset(num_samples=1400)
    sizes = [8, 80, 800, 88, 96, 104, 16]  # steps at batch 8: 1, 10, 100, 11, 12, 13, 2
    offsets = np.cumsum([0, *sizes])
    parts = [np.arange(a, b) for a, b in itertools.pairwise(offsets)]
    model = build_model("logreg", data.input_shape, data.num_classes, torch.Generator())
    spec = LocalSpec(epochs=1, batch_size=8, lr=0.1)
    trainer = ClientTrainer(0, model, data.x, data.y, parts, spec, Streams(0))
    groups: list[list[int]] = []
    many = trainer.train_many

    def recorded(jobs):  # type: ignore[no-untyped-def]
        groups.append([j[0] for j in jobs])
        return many(jobs)

    trainer.train_many = recorded  # type: ignore[method-assign]
    start = flatten(model)
    jobs = [TrainingJob(0, c, 0, start) for c in range(len(sizes))]
    batching, inline = BatchingExecutor({0: trainer}), InlineExecutor({0: trainer})
    handles = [batching.submit(j) for j in jobs]
    first = handles[1].result()  # 10 steps: fused with the 11-, 12- and 13-step clients
    assert groups == [[1, 3, 4, 5]]
    assert all(handles[c].update is not None for c in (3, 4, 5))
    assert handles[0].result().num_steps == 1  # 1 step: its only near peer is the 2-step one
    assert groups == [[1, 3, 4, 5]]  # ... too few to fuse: it trained alone
    for c, h in enumerate(handles):
        mine, ref = (first if c == 1 else h.result()), inline.submit(jobs[c]).result()
        assert mine.num_steps == ref.num_steps
        assert torch.allclose(mine.delta, ref.delta, rtol=1e-4, atol=1e-5)

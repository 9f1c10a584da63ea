"""Pruned, personalized rounds on the virtual clock (SPEC E): reductions, latency, event log."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedtempo.aggregation.sync import FedAvg
from fedtempo.client.local import Update, train_local
from fedtempo.errors import ConfigError
from fedtempo.experiment.build import Built, build
from fedtempo.experiment.config import load
from fedtempo.personalize.masks import kept_count, upload_bytes
from fedtempo.sim.recorder import Recorder

PRUNED = [
    "server.algorithm=pruned",
    "partition.num_clients=6",
    "partition.client_test_fraction=0.2",
    "server.clients_per_round=6",
    "server.rounds=2",
    "train.iterations=5",
    "devices.uplink.kind=wireless",
    "server.pruning.bandwidth_hz=2e5",
    "eval.interval=0",
]


def _built(*extra: str) -> Built:
    return build(load(None, [*PRUNED, *extra]), Recorder())


def test_no_personal_part_and_no_pruning_is_fedavg() -> None:
    built = _built("server.rounds=1", "server.pruning.policy=fixed", "server.pruning.personal=[]")
    task = built.task
    start = task.model.params.clone()
    built.simulation.run()
    trainer = task.trainer
    updates = []
    for c in trainer.clients_with_data():
        x, y = trainer.data(c)
        gen = trainer.generator(c, 0, 0)  # FedAvg's stream: version 0, first dispatch
        delta, steps, loss = train_local(trainer.model, start, x, y, trainer.spec, gen)
        updates.append(Update(c, 0, 0, delta, trainer.num_samples(c), steps, loss))
    expected = FedAvg(1.0).aggregate(start, updates)
    assert torch.allclose(task.model.params, expected, atol=1e-6, rtol=0)


def test_kkt_rounds_meet_the_threshold_and_keep_personal_parts_home() -> None:
    built = _built()
    server, task = built.pruned, built.task
    assert server is not None
    personal = server.personal
    init = task.model.params[personal].clone()
    result = built.simulation.run()
    state = built.rounds.state
    assert len(state.log) == 2
    mask_bits = 8 * math.ceil(server.global_numel / 8) + 32  # bitmap + the ceil of kept
    for r in state.log:
        p, alloc = r.problem, r.allocation
        served = [i for i, c in enumerate(r.clients) if c not in r.left_out]
        assert served and alloc.bandwidth.sum() <= p.bandwidth * (1 + 1e-9)
        for i in served:  # the KKT latency + what it does not count
            rate = p.rate_of(i, float(alloc.bandwidth[i]))
            assert r.latency[i] <= p.threshold * (1 + 1e-9) + mask_bits / rate
        assert np.any(alloc.rho[served] > 0)  # the threshold (half the worst) forces pruning
    # The global model's personal entries never changed; every device has its own.
    assert torch.equal(task.model.params[personal], init)
    parts = state.parts
    assert sorted(parts) == list(range(6))
    assert not torch.equal(parts[0], parts[1])
    # Event log: each served device computes then uploads its real pruned size.
    first = state.log[0]
    uploads = [e for e in result.recorder.events if e.kind == "upload" and e.version == 0]
    by_client = {e.client: e for e in uploads}
    for i, c in enumerate(first.clients):
        if c in first.left_out:
            assert c not in by_client
            continue
        kept = kept_count(server.global_numel, float(first.allocation.rho[i]))
        assert by_client[c].bytes == upload_bytes(server.global_numel, kept)
        assert by_client[c].duration > 0 and by_client[c].energy > 0


def test_pruned_runs_are_bit_identical_and_fixed_ratio_prunes() -> None:
    a, b = _built(), _built()
    ra, rb = a.simulation.run(), b.simulation.run()
    assert torch.equal(ra.final_params[0], rb.final_params[0])
    assert [e.accuracy for e in ra.recorder.evaluations] == [
        e.accuracy for e in rb.recorder.evaluations
    ]
    fixed = _built("server.pruning.policy=fixed", "server.pruning.ratio=0.5")
    fixed.simulation.run()
    assert fixed.pruned is not None
    assert all(np.all(r.allocation.rho == 0.5) for r in fixed.rounds.state.log)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        (["partition.client_test_fraction=0"], "own test split"),
        (["devices.uplink.kind=lognormal"], "needs 'wireless'"),
        (["server.pruning.personal=['nope']"], r"server.pruning.personal: .*nope"),
    ],
)
def test_bad_pruned_configs_are_named(override: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _built(*override)

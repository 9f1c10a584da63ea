"""The synchronous rules fused one update at a time (the service's aggregator workers) against
the same rules applied at once (the simulator)."""

from __future__ import annotations

import itertools

import pytest
import torch

from fedtempo.aggregation.sync import FedAvg, RobustStep, sync_rule_from
from fedtempo.client.local import Update


def _updates(n: int = 5, samples: tuple[int, ...] = (3, 8, 1, 5, 13)) -> list[Update]:
    g = torch.Generator().manual_seed(7)
    return [Update(i, 0, 0, torch.randn(40, generator=g), samples[i], 1, 0.1) for i in range(n)]


def _fused(rule: FedAvg | RobustStep, current: torch.Tensor, updates: list[Update]) -> torch.Tensor:
    fused = rule.fuser()
    for u in updates:
        if rule.weight(u.num_samples) > 0:
            fused.add(u.delta, rule.weight(u.num_samples))
    return rule.step(current, fused)


@pytest.mark.parametrize("reducer", ["median", "trimmed_mean"])
def test_robust_steps_fused_in_any_order_are_the_rule_bit_for_bit(reducer: str) -> None:
    rule, current, updates = RobustStep(reducer, 0.5, 0.2), torch.zeros(40), _updates()
    direct = rule.aggregate(current, updates)
    for order in itertools.islice(itertools.permutations(updates), 0, 120, 17):
        assert torch.equal(_fused(rule, current, list(order)), direct)


def test_fedavg_fused_equals_fedavg_up_to_float_rounding_and_is_order_sensitive_only_there() -> (
    None
):
    rule, current, updates = FedAvg(0.7), torch.randn(40), _updates()
    direct = rule.aggregate(current, updates)
    for order in itertools.permutations(updates[:4]):
        assert torch.allclose(
            _fused(rule, current, list(order)), rule.aggregate(current, updates[:4]), atol=1e-6
        )
    assert torch.allclose(_fused(rule, current, updates), direct, atol=1e-6)
    # the same order gives the same bits (the service fuses in arrival order, every policy alike)
    assert torch.equal(_fused(rule, current, updates), _fused(rule, current, updates))


def test_a_trimmed_mean_without_trimming_is_fedavg_when_every_party_has_as_many_samples() -> None:
    updates = _updates(samples=(4, 4, 4, 4, 4))
    current = torch.randn(40)
    trimmed = RobustStep("trimmed_mean", 1.0, 0.0).aggregate(current, updates)
    assert torch.allclose(trimmed, FedAvg(1.0).aggregate(current, updates), atol=1e-6)


def test_the_median_of_one_update_is_fedavg_of_it() -> None:
    (u,) = _updates(1)
    current = torch.randn(40)
    assert torch.equal(RobustStep("median").aggregate(current, [u]), current + u.delta)
    assert torch.allclose(FedAvg().aggregate(current, [u]), current + u.delta)


def test_updates_without_samples_are_left_out_and_nothing_fused_keeps_the_model() -> None:
    current = torch.randn(40)
    empty = [Update(0, 0, 0, torch.ones(40), 0, 1, 0.1)]
    for rule in (FedAvg(), RobustStep("median")):
        assert torch.equal(rule.aggregate(current, empty), current)
        assert torch.equal(_fused(rule, current, empty), current)


def test_rules_round_trip_through_their_description() -> None:
    for rule in (FedAvg(0.3), RobustStep("median", 2.0), RobustStep("trimmed_mean", 1.0, 0.25)):
        assert sync_rule_from(rule.describe()) == rule
    with pytest.raises(ValueError, match="not a synchronous rule"):
        sync_rule_from({"rule": "mean"})
    with pytest.raises(ValueError, match="reducer must be"):
        sync_rule_from({"rule": "mode", "server_lr": 1.0})

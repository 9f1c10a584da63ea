"""Fuzzing (issue 20): Hypothesis-generated broken safetensors and envelopes, signed, at the
upload route; schemathesis at every route of the OpenAPI schema, case by case and in stateful
sequences. The server never answers 5xx, never hangs, and a refused upload changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.chaos.fuzz import Tally, Target, fuzz_uploads, schemathesis_run, schemathesis_stateful
from tests.service.helpers import InProcess


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcess]:
    svc = InProcess(tmp_path_factory.mktemp("fuzz") / "state")
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def target(service: InProcess) -> Target:
    return Target(service.client, service.token, service.service.store.root)


def test_broken_payloads_and_envelopes_are_refused_and_change_nothing(target: Target) -> None:
    tally = fuzz_uploads(target, 300, Tally(), seed=0)
    assert tally.tried == 300
    assert tally.server_errors == 0 and tally.changed_on_refusal == 0, tally.examples
    assert tally.slowest_s < 5.0
    refused = sum(n for s, n in tally.statuses.items() if 400 <= s < 500)
    assert refused > 0.9 * tally.tried, tally.statuses


def test_schemathesis_finds_no_server_error_at_any_route(
    service: InProcess, target: Target
) -> None:
    tally = schemathesis_run(service, target, 15, Tally(), seed=0)
    assert tally.server_errors == 0, tally.examples
    assert tally.tried >= 14 * 10  # every operation, many cases each
    assert any(200 <= s < 300 for s in tally.statuses), tally.statuses  # some got through
    assert service.client.get("/v1/health").status_code == 200


def test_schemathesis_sequences_find_no_server_error(tmp_path: Path) -> None:
    tally = schemathesis_stateful(tmp_path, 6, Tally())
    assert tally.server_errors == 0, tally.examples
    assert tally.statuses.get(201, 0) > 0, tally.statuses  # jobs were made, and chains went on
    assert tally.tried > 6 * 2


def test_integers_too_large_for_the_ledger_are_refused_with_a_reason(tmp_path: Path) -> None:
    # found by the 100k run: a /work body whose samples overflowed SQLite's 64-bit integers
    # was a 500; every number a request names is now bounded
    from fedtempo.service import wire
    from fedtempo.service.jobs import Envelope

    svc = InProcess(tmp_path / "state")
    target = Target(svc.client, svc.token, svc.service.store.root)
    huge = 2**70
    before = target.state()
    work = f'{{"samples": {huge}, "wait_s": 0}}'.encode()
    r = target.signed("POST", f"/v1/jobs/{target.job}/work", work, "application/json")
    assert r.status_code == 422, r.text
    r = target.signed("GET", f"/v1/jobs/{target.job}/versions/{huge}", b"", "")
    assert r.status_code == 422, r.text
    body = wire.encode(
        target.layout,
        torch.zeros(target.layout.numel),
        Envelope(target.task, huge, 4, 1, 0.5).to_meta(),
    )
    octet = "application/octet-stream"
    r = target.signed("PUT", f"/v1/jobs/{target.job}/updates/huge", body, octet)
    assert r.status_code == 422 and "above" in r.text, r.text
    assert target.state() == before
    svc.close()

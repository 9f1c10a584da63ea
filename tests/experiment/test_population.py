from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedtempo.cli import app
from fedtempo.errors import DataError
from fedtempo.experiment.config import load
from fedtempo.experiment.population import build_population
from fedtempo.rng import Streams

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TRACES = Path(__file__).resolve().parents[3] / "shared" / "data" / "traces"
needs_traces = pytest.mark.skipif(not TRACES.is_dir(), reason="../shared/data/traces not present")

REAL = [
    "devices.compute.source=training-latency",
    "devices.uplink.kind=trace",
    "devices.downlink.kind=trace",
    "devices.availability.source=flash",
]


def _signature(pop) -> list[float]:  # type: ignore[no-untyped-def]
    return [
        *pop.compute.flops_per_s.tolist(),
        *(pop.uplink.transfer_time(c, 1e6, 3.0) for c in range(pop.size)),
        *(pop.downlink.transfer_time(c, 1e6, 3.0) for c in range(pop.size)),
        *(pop.availability.next_start(c, 1000.0) for c in range(pop.size)),
        *(pop.compute_time(c, 1e9, 7.0) for c in range(pop.size)),
    ]


@needs_traces
def test_populations_are_identical_for_equal_seeds() -> None:
    cfg = load(None, REAL).devices
    a = build_population(cfg, 50, Streams(3))
    b = build_population(cfg, 50, Streams(3))
    c = build_population(cfg, 50, Streams(4))
    assert _signature(a) == _signature(b)
    assert _signature(a) != _signature(c)


def test_lognormal_population_is_seeded() -> None:
    cfg = load(None, ["devices.uplink.kind=wireless"]).devices
    a, b = build_population(cfg, 30, Streams(0)), build_population(cfg, 30, Streams(0))
    assert _signature(a) == _signature(b)
    assert np.std(np.log(a.compute.flops_per_s)) > 0.3  # heterogeneous


@needs_traces
def test_more_clients_than_trace_devices() -> None:
    cfg = load(None, ["devices.uplink.kind=trace"]).devices
    pop = build_population(cfg, 200, Streams(0))  # 127 FCC traces
    assert any("127 devices for 200 clients, sampled with replacement" in n for n in pop.notes)
    strict = load(None, ["devices.uplink.kind=trace", "devices.strict=true"]).devices
    with pytest.raises(DataError, match="127 devices for 200 clients"):
        build_population(strict, 200, Streams(0))


def test_missing_trace_is_a_clear_error(tmp_path: Path) -> None:
    cfg = load(None, ["devices.uplink.kind=trace", f"devices.uplink.trace={tmp_path}/nope"])
    with pytest.raises(DataError, match="nope: not found"):
        build_population(cfg.devices, 5, Streams(0))


@needs_traces
def test_population_cli_on_the_w_tta_population(tmp_path: Path) -> None:
    out = tmp_path / "pop.png"
    result = CliRunner().invoke(
        app,
        [
            "population",
            str(CONFIGS / "w_tta_base.toml"),
            "--out",
            str(out),
            "--set",
            "data.dataset=digits",
            "--set",
            "model.name=mlp",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "population of w-tta: 100 devices" in result.output
    assert "compute speed" in result.output and "energy per round" in result.output
    assert out.is_file() and out.stat().st_size > 10_000


def test_run_results_include_per_client_time_and_energy(tmp_path: Path) -> None:
    from fedtempo.experiment.results import run_experiment

    cfg = load(None, ["server.rounds=2", "devices.uplink.kind=wireless"])
    summary, _ = run_experiment(cfg, tmp_path)
    header, *rows = (tmp_path / "clients.csv").read_text().splitlines()
    cols = header.split(",")
    for name in ("compute_s", "upload_s", "compute_j", "upload_j", "energy_j"):
        assert name in cols
    energy = sum(float(r.split(",")[cols.index("energy_j")]) for r in rows)
    assert energy == pytest.approx(summary["energy_j"]) and energy > 0

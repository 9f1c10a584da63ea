"""Every benchmark script runs at its --quick size and writes its results JSON."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED_MNIST

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
TRACES = SHARED_MNIST.parent / "traces"
NEEDS_MNIST = {"w_sim.py", "w_sfl.py", "w_mafl.py"}
NEEDS_TRACES = {"w_tta.py", "w_fail.py", "w_jit.py", "w_jit_live.py", "w_scale.py", "w_sfl.py"}


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("w_*.py")))
def test_benchmark_runs_quick(script: str) -> None:
    if script in NEEDS_MNIST and not (SHARED_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("needs ../shared/data/mnist")
    if script in NEEDS_TRACES and not TRACES.is_dir():
        pytest.skip("needs ../shared/data/traces")
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=BENCH.parent,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    name = script.removesuffix(".py") + "_quick.json"
    payload = json.loads((BENCH / "results" / name).read_text())
    assert payload["figures"] and payload["targets"]
    assert all("met" in t for t in payload["targets"].values())


def test_w_mafl_pairs_each_optimiser_point_with_the_best_baseline_on_the_same_seeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A point behind on the median of levels can be ahead seed by seed: one seed where every
    scheduler does badly must not decide the comparison."""
    monkeypatch.syspath_prepend(str(BENCH))
    import w_mafl

    def row(sched: str, knob: str, seed: int, acc: float, energy: float) -> dict[str, object]:
        return {"scheduler": sched, "knob": knob, "seed": seed, "accuracy": acc, "energy": energy}

    best = ("round-robin", "gamma40-B32")
    rows = [row(*best, s, a, 100.0) for s, a in [(0, 0.70), (1, 0.91), (2, 0.92)]]
    rows += [row("sca", "beta0", s, a, 40.0) for s, a in [(0, 0.72), (1, 0.89), (2, 0.93)]]
    rows += [row("sca", "beta1", s, a, 20.0) for s, a in [(0, 0.60), (1, 0.80), (2, 0.93)]]
    rows += [row("sca-schedule", "beta0", s, 0.5, 10.0) for s in range(3)]
    figures: dict[str, float] = {}
    out = w_mafl.paired(rows, best, figures)
    assert figures["sca_beta0_paired_accuracy_gain"] == pytest.approx(0.01)
    assert figures["sca_beta0_paired_energy_ratio"] == pytest.approx(0.4)
    assert figures["sca_beta0_paired_seeds_at_least_best_baseline"] == 2
    assert figures["sca_beta1_paired_accuracy_gain"] < 0
    assert out["sca_paired_energy_ratio_at_best_baseline_accuracy"] == pytest.approx(0.4)
    assert out["sca-schedule_paired_energy_ratio_at_best_baseline_accuracy"] == -1.0
    assert out["sca-sizing_paired_energy_ratio_at_best_baseline_accuracy"] == -1.0


def test_mafl_spare_pairs_every_point_with_both_references(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    import mafl_spare

    def row(name: str, seed: int, acc: float, energy: float) -> dict[str, object]:
        tasks = [("a", acc, energy), ("b", acc, 0.0)]
        return {"knob": f"base_{name}", "seed": seed, "accuracy": acc, "energy": energy,
                "tasks": tasks, "solve_s": 0.0}  # fmt: skip

    rows = [row("rr-g40-B32", s, a, 100.0) for s, a in [(0, 0.70), (1, 0.91), (2, 0.92)]]
    rows += [row("rr-g40-B8", s, a, 30.0) for s, a in [(0, 0.68), (1, 0.90), (2, 0.90)]]
    rows += [row("spare-rr-g40-B32", s, a, 35.0) for s, a in [(0, 0.71), (1, 0.90), (2, 0.93)]]
    figures: dict[str, float] = {}
    names = ["rr-g40-B32", "rr-g40-B8", "spare-rr-g40-B32"]
    mafl_spare.summarise(rows, "base", names, figures)
    key = "base_spare-rr-g40-B32"
    assert figures[f"{key}_mean_accuracy"] == pytest.approx(0.90)
    assert figures[f"{key}_vs_rr-g40-B32_accuracy_gain"] == pytest.approx(0.01)
    assert figures[f"{key}_vs_rr-g40-B32_energy_ratio"] == pytest.approx(0.35)
    assert figures[f"{key}_vs_rr-g40-B32_seeds_ahead"] == 2
    assert figures[f"{key}_vs_rr-g40-B8_seeds_ahead"] == 3
    assert "base_rr-g40-B32_vs_rr-g40-B32_accuracy_gain" not in figures


def test_w_mafl_reuses_only_baseline_runs_with_the_same_overrides_and_seed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    import w_mafl

    def job(sched: str, knob: str, seed: int, *over: str) -> dict[str, object]:
        overrides = [f"seed={seed}", f"mafl.scheduler={sched}", *over]
        return {"scheduler": sched, "knob": knob, "seed": seed, "overrides": overrides,
                "config": "/elsewhere/configs/w_mafl.toml"}  # fmt: skip

    rr = job("round-robin", "gamma40-B32", 0, "mafl.iterations=40")
    sca = job("sca", "beta0", 0, "mafl.beta_e=0")
    recorded = [
        rr | {"accuracy": 0.9, "energy": 100.0},
        sca | {"accuracy": 0.95, "energy": 50.0},  # an optimiser's run: always run again
        job("round-robin", "gamma40-B32", 1, "mafl.iterations=40") | {"accuracy": 0.8},
    ]
    path = tmp_path / "w_mafl.json"
    path.write_text(json.dumps({"figures": {}, "rows": recorded}))
    other = job("round-robin", "gamma40-B32", 0, "mafl.iterations=40", "mafl.batch=8")
    here = rr | {"config": "configs/w_mafl.toml"}  # the same file, checked out elsewhere
    out = w_mafl.reusable(path, [here, sca, other, job("round-robin", "gamma40-B32", 2)])
    assert list(out.values()) == [recorded[0]]
    assert w_mafl._key(rr) in out
    path.write_text(json.dumps({"figures": {}}))  # an old file: figures only
    with pytest.raises(SystemExit, match=r"w_mafl\.json.*rows"):
        w_mafl.reusable(path, [rr])

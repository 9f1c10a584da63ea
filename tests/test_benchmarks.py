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

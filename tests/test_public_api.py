"""The front door: what ``fedtempo`` exports, that each name resolves and is what it says, and
that the layers import one way only (DESIGN.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import fedtempo

SRC = Path(fedtempo.__file__).resolve().parent

EXPECTED = {
    "__version__",
    "load_config",
    "run",
    "RoundAlgorithm",
    "RoundView",
    "RoundPlan",
    "ClientPlan",
    "Download",
    "Compute",
    "Exchange",
    "Upload",
    "WaitUntil",
    "TrainingJob",
    "FedAvgRounds",
    "PrunedRounds",
    "SplitFedRounds",
    "MaflRounds",
    "Executor",
    "Step",
    "AsyncAggregator",
    "MixStep",
    "BufferStep",
    "DeltaStep",
    "StalenessWeight",
    "Constant",
    "Polynomial",
    "Hinge",
    "InverseSqrt",
    "Euclidean",
    "SyncRule",
    "FedAvg",
    "DeviceModel",
    "Availability",
    "Link",
    "LocalSpec",
    "Update",
    "train_local",
}


def test_the_public_names_are_exactly_the_curated_ones() -> None:
    assert set(fedtempo.__all__) == EXPECTED
    for name in fedtempo.__all__:
        assert getattr(fedtempo, name) is not None
    assert set(EXPECTED) <= set(dir(fedtempo))
    assert fedtempo.FedAvgRounds.__module__ == "fedtempo.algorithms.fedavg"


def test_import_fedtempo_is_cheap() -> None:
    code = "import sys, fedtempo; print('torch' in sys.modules, 'simpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_run_and_load_config_from_the_front_door(tmp_path: Path) -> None:
    config = fedtempo.load_config(None, ["server.rounds=2", "eval.interval=0"])
    summary = fedtempo.run(config, tmp_path / "out")
    assert summary["model_version"] == 2 and (tmp_path / "out" / "summary.json").is_file()


# Layers, lowest first; a module may import its own layer and those below (DESIGN.md).
LAYERS = [
    {"params", "rng", "errors"},
    {"data", "models", "system"},
    {"client", "aggregation", "alloc", "split", "personalize", "multitask", "jit"},
    {"algorithms"},
    {"sim", "service"},
    {"experiment"},
    {"cli", "cli_common", "cli_deploy", "cli_emulate", "testing"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fedtempo."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("fedtempo.")}
    return found


def test_imports_flow_one_way() -> None:
    wrong = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        if rel.name == "__init__.py" and len(rel.parts) == 1:
            continue  # the front door names everything, lazily
        own = rel.parts[0].removesuffix(".py")
        for target in _imports(path):
            if target in RANK and RANK[target] > RANK[own]:
                wrong.append(f"{rel} imports fedtempo.{target}")
            if {own, target} == {"sim", "service"}:  # two drivers of the same algorithms
                wrong.append(f"{rel} imports fedtempo.{target}")
    assert not wrong, wrong


def test_no_source_file_is_over_400_lines() -> None:
    long = {
        str(p.relative_to(SRC)): n
        for p in SRC.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert not long, long

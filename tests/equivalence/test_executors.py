"""The process-pool executor gives bit-identical results to the inline one."""

import pytest
import torch

from fedtempo.experiment.config import load
from fedtempo.experiment.results import run_experiment


@pytest.mark.parametrize(
    "overrides",
    [
        ["server.rounds=3", "server.deadline=4.0"],  # stragglers trained but never consumed
        ["server.algorithm=asyncfeded", "server.max_updates=40", "devices.failure_probability=0.2"],
    ],
    ids=["fedavg-deadline", "asyncfeded-failures"],
)
def test_process_executor_is_bit_identical(overrides: list[str]) -> None:
    _, inline = run_experiment(load(None, overrides), None)
    _, pooled = run_experiment(load(None, [*overrides, "executor=process", "workers=2"]), None)
    assert torch.equal(inline.final_params[0], pooled.final_params[0])
    strip = lambda evs: [(e.time, e.version, e.accuracy, e.loss) for e in evs]  # noqa: E731
    assert strip(inline.recorder.evaluations) == strip(pooled.recorder.evaluations)
    assert [u.gamma for u in inline.recorder.updates] == [u.gamma for u in pooled.recorder.updates]


def test_ray_executor_is_bit_identical() -> None:
    pytest.importorskip("ray")
    overrides = ["server.algorithm=fedbuff", "server.max_updates=30"]
    _, inline = run_experiment(load(None, overrides), None)
    _, remote = run_experiment(load(None, [*overrides, "executor=ray", "workers=2"]), None)
    assert torch.equal(inline.final_params[0], remote.final_params[0])


def test_a_single_threaded_process_forks_its_pool_and_gets_the_inline_bits() -> None:
    """The command line runs in one thread, so its pool is forked (a test runner has threads:
    the tests above spawn theirs); forked workers give the inline bits too."""
    import subprocess
    import sys

    code = (
        "import threading, torch\n"
        "from fedtempo.experiment.config import load\n"
        "from fedtempo.experiment.results import run_experiment\n"
        "from fedtempo.sim.parallel import start_method\n"
        "print(start_method())\n"
        "sets = ['server.algorithm=fedbuff', 'server.max_updates=30']\n"
        "_, a = run_experiment(load(None, sets), None)\n"
        "_, b = run_experiment(load(None, [*sets, 'executor=process', 'workers=2']), None)\n"
        "print(torch.equal(a.final_params[0], b.final_params[0]))\n"
        "threading.Thread(target=threading.Event().wait, args=(5,), daemon=True).start()\n"
        "print(start_method())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["fork", "True", "spawn"]

"""The same aggregator worker interface on Ray (SPEC C at scale): on a local Ray cluster, each
worker is an actor; a round fused there equals the job's rule applied directly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedtempo.service.aggregation import AggregationSettings
from tests.service.helpers import InProcess
from tests.service.test_workers import _direct, _model, _run_rounds, _spec

ray = pytest.importorskip("ray", reason="Ray is not installed (.ci/run installs it)")


@pytest.mark.slow
def test_rounds_fused_by_ray_actors_equal_the_rule(tmp_path: Path) -> None:
    from fedtempo.service.rayworkers import RayLauncher

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        launcher = RayLauncher(tmp_path / "s" / "blobs", "auto")
        assert launcher.capacity() == 2
        svc = InProcess(
            tmp_path / "s", aggregation=AggregationSettings("lazy", workers=2), launcher=launcher
        )
        spec = _spec(2, "trimmed_mean")
        job = svc.create(spec)
        orders = [[0, 1, 2], [2, 1, 0]]
        _run_rounds(svc, job, orders)
        assert torch.equal(_model(svc, job), _direct(spec, orders))
        svc.wait_idle(job)
        lives = svc.service.accounting.workers(job)
        assert len(lives) == 2 and all(w["outcome"] == "done" for w in lives)
        assert all(w["ready"] >= w["spawned"] for w in lives)
        svc.close()
    finally:
        ray.shutdown()

"""A full disk and a read-only state directory (a small tmpfs the test mounts): the server
refuses new updates with a clear 503 and its reason, loses nothing it acknowledged, and takes
updates again once space returns; on a read-only one it refuses to start, saying why."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.disk import NoTmpfs, disk_run
from tests.chaos.harness import bad_figures

pytestmark = pytest.mark.slow


def test_a_full_then_read_only_disk_refuses_clearly_and_recovers(tmp_path: Path) -> None:
    try:
        out = disk_run(tmp_path)
    except NoTmpfs as exc:
        pytest.skip(str(exc))
    assert out["acked_while_full"] <= 1  # (one may have been committed as the disk filled)
    assert out["health_while_full"] == 200  # the server is up, refusing writes only
    status, retry, text = out["answer_while_full"]
    assert status == 503 and retry and "disk is full" in text, out
    assert out["recovered"] and out["errors"] == []
    assert "Read-only file system" in out["read_only_start"], out["read_only_start"]
    assert out["tracebacks_in_log"] == 0
    assert bad_figures(out["verdict"]) == {}, out["verdict"]

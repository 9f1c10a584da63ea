"""The operator's view of a real ``fedtempo serve`` process: the dashboard in headless Chromium
(Debian's ``chromium``), updating as updates arrive without a reload; the Prometheus metrics;
the aggregation figures of the job status."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest
import torch

from fedtempo.service import auth
from fedtempo.service.client import Admin
from fedtempo.service.party import Party, PartyStats, Trained, WorkTask
from tests.service.helpers import tiny_spec
from tests.service.live import Server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(
    os.environ.get("FEDTEMPO_ARTIFACTS", Path(__file__).parents[2] / "runs" / "test-artifacts")
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _party(server: Server, admin: Admin, job: str, name: str) -> Party:
    key = auth.new_key()
    admin.enroll(job, name, auth.b64(auth.public_key_bytes(key)))
    cred = auth.Credential(server.url, job, name, auth.private_bytes(key))

    def train(task: WorkTask, start: torch.Tensor) -> Trained:
        return Trained(torch.full((15,), 0.01 * ((task.round or 0) + 1)), 4, 1, 0.5)

    return Party(cred, train, 4, wait_s=0.5, give_up_s=30.0)


def _round(parties: list[Party]) -> None:
    """Each party asks (long-polls, a bounded number of times) until the next round opens,
    then trains and uploads."""
    tasks: list[WorkTask | bool | None] = [None] * len(parties)
    for _ in range(60):
        tasks = [p.ask() if t is None else t for p, t in zip(parties, tasks, strict=True)]
        if all(t is not None for t in tasks):
            break
    for p, t in zip(parties, tasks, strict=True):
        assert isinstance(t, WorkTask)
        p.step(t, PartyStats())


@pytest.mark.slow
def test_dashboard_in_chromium_follows_a_job_and_metrics_count_its_workers(tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    server = Server(tmp_path / "state")
    server.start(args=("--aggregation", "lazy", "--workers", "2"))
    try:
        admin = Admin(server.url, server.token)
        spec = tiny_spec(
            {"algorithm": "fedavg", "rounds": 3, "clients_per_round": 2}, gather_s=30.0
        )
        job = admin.create_job("dash", spec)
        parties = [_party(server, admin, job, f"p{i}") for i in range(2)]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.goto(f"{server.url}/#token={server.token}")
            row = f'tr[data-job="{job}"]'
            page.wait_for_selector(row, timeout=20_000)
            assert page.inner_text(f"{row} .version") == "0"
            assert page.inner_text(f"{row} .accepted") == "0"
            loads = []
            page.on("load", lambda _: loads.append(1))
            _round(parties)
            _round(parties)
            # the numbers change as the rounds are published, with no reload of the page
            page.wait_for_function(
                f"document.querySelector('{row} .version').textContent === '2'", timeout=30_000
            )
            assert page.inner_text(f"{row} .accepted") == "4"
            assert int(page.inner_text("#deploys")) >= 2  # lazy: a worker per round
            # an evaluator reports two versions: the accuracy line follows, no reload
            assert page.is_visible("#accuracy-none")
            admin.evaluate(job, 1, 0.5, 100, loss=1.2)
            admin.evaluate(job, 2, 0.75, 100)
            line = f'polyline.accuracy-line[data-job="{job}"][data-points="2"]'
            page.wait_for_selector(line, timeout=10_000)
            assert page.text_content("#accuracy .accuracy-last") == "75.0%"
            assert loads == []
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            bad = browser.new_page()
            bad.goto(f"{server.url}/#token=ft-admin-wrong")
            bad.wait_for_selector("#login-error:has-text('refused')", timeout=10_000)
            browser.close()
        status = admin.status(job)
        a = status["aggregation"]
        assert a["deploys"] >= 2 and a["container_s"] > 0 and a["cpu_s"] > 0
        assert a["latency_s_median"] is not None and a["latency_s_median"] >= 0
        assert 0 < a["container_s"] < a["eager_equivalent_s"]  # lazy held less than eager would
        metrics = httpx.get(
            f"{server.url}/metrics", headers={"authorization": f"Bearer {server.token}"}
        )
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith(
            "text/plain"
        )
        text = metrics.text
        assert f'fedtempo_job_version{{job="{job}"}} 2.0' in text
        assert f'fedtempo_job_accuracy{{job="{job}"}} 0.75' in text
        assert f'fedtempo_worker_deploys_total{{job="{job}"}}' in text
        assert "fedtempo_worker_pool_capacity 2.0" in text
        assert httpx.get(f"{server.url}/metrics").status_code == 401
        assert httpx.get(f"{server.url}/v1/dashboard").status_code == 401
    finally:
        server.kill()

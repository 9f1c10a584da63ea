"""A real ``fedtempo serve`` process on loopback, for the end-to-end and crash tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.service.helpers import free_port

CLI = [sys.executable, "-c", "from fedtempo.cli import app; app()"]


class Server:
    def __init__(
        self, state: Path, tls: bool = False, tls_files: tuple[Path, Path] | None = None
    ) -> None:
        """``tls``: a self-signed certificate the server makes; ``tls_files``: (cert, key)."""
        self.state, self.port, self.tls, self.tls_files = state, free_port(), tls, tls_files
        https = tls or tls_files is not None
        self.url = f"{'https' if https else 'http'}://127.0.0.1:{self.port}"
        self.admin_file = state.parent / f"{state.name}-admin.txt"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = state.parent / f"{state.name}-serve.log"

    def start(self, failpoint: str | None = None, args: tuple[str, ...] = ()) -> None:
        env = {k: v for k, v in os.environ.items() if k != "FEDTEMPO_FAILPOINT"}
        if failpoint:
            env["FEDTEMPO_FAILPOINT"] = failpoint
        cmd = [
            *CLI,
            "serve",
            "--state",
            str(self.state),
            "--port",
            str(self.port),
            "--admin-file",
            str(self.admin_file),
        ]
        if self.tls:
            cmd.append("--tls-self-signed")
        if self.tls_files is not None:
            cmd += ["--tls-cert", str(self.tls_files[0]), "--tls-key", str(self.tls_files[1])]
        cmd.extend(args)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                r = httpx.get(self.url + "/v1/health", timeout=1, verify=False)
                if r.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)
        raise RuntimeError("server did not start within 60 s")

    @property
    def token(self) -> str:
        return self.admin_file.read_text().strip()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def wait_dead(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

"""The HTTP side of the agent and of the admin commands: signed requests, retried politely.

Connection failures, timeouts and 503 answers (a server restarting, a full disk) are retried
with capped exponential backoff; a 4xx is the server's considered answer and is returned.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from fedtempo.service.auth import Credential

RETRY_STATUS = {502, 503, 504}


class ServiceError(RuntimeError):
    """The server refused a request (its status and reason), or could not be reached."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}" if status else reason)
        self.status, self.reason = status, reason


def tls_context(ca: Path | None) -> ssl.SSLContext | bool:
    """Verify the server against ``ca`` (a self-signed server's certificate), else the system's
    trust store."""
    return ssl.create_default_context(cafile=str(ca)) if ca is not None else True


def reason_of(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text[:200]


class Http:
    """One server; ``send`` retries transport failures and 5xx-retryable answers until
    ``give_up_s`` has passed (backoff 0.1 s doubling to ``max_backoff_s``)."""

    def __init__(
        self,
        server: str,
        *,
        ca: Path | None = None,
        timeout_s: float = 60.0,
        max_backoff_s: float = 20.0,
        give_up_s: float = 600.0,
        sleep: Callable[[float], None] = time.sleep,
        client: httpx.Client | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.client = client or httpx.Client(
            base_url=self.server, verify=tls_context(ca), timeout=timeout_s
        )
        self.max_backoff_s, self.give_up_s, self.sleep = max_backoff_s, give_up_s, sleep
        self.retries = 0

    def close(self) -> None:
        self.client.close()

    def send(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Callable[[bytes], dict[str, str]] | None = None,
        timeout_s: float | None = None,
    ) -> httpx.Response:
        start, backoff = time.monotonic(), 0.1
        while True:
            h = dict(headers(body)) if headers else {}
            if content_type:
                h["content-type"] = content_type
            try:
                extra: dict[str, Any] = {} if timeout_s is None else {"timeout": timeout_s}
                r = self.client.request(method, path, content=body, headers=h, **extra)
                if r.status_code not in RETRY_STATUS:
                    return r
                problem = f"{r.status_code}: {reason_of(r)}"
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if time.monotonic() - start > self.give_up_s:
                raise ServiceError(0, f"{self.server}{path}: gave up after retries ({problem})")
            self.retries += 1
            self.sleep(backoff)
            backoff = min(2 * backoff, self.max_backoff_s)


def checked(r: httpx.Response) -> httpx.Response:
    if r.status_code >= 400:
        raise ServiceError(r.status_code, reason_of(r))
    return r


class Admin:
    """Job management with the admin credential."""

    def __init__(
        self, server: str, token: str, ca: Path | None = None, client: httpx.Client | None = None
    ) -> None:
        self.http = Http(server, ca=ca, give_up_s=30.0, client=client)
        self.token = token

    def _h(self, body: bytes) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    def _json(self, method: str, path: str, data: Any = None) -> Any:
        import json

        body = b"" if data is None else json.dumps(data).encode()
        ctype = None if data is None else "application/json"
        return checked(self.http.send(method, path, body, ctype, self._h)).json()

    def create_job(self, name: str, spec: dict[str, Any]) -> str:
        return str(self._json("POST", "/v1/jobs", {"name": name, "spec": spec})["job"])

    def jobs(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/jobs")["jobs"])

    def status(self, job: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/v1/jobs/{job}"))

    def stop(self, job: str) -> dict[str, Any]:
        return dict(self._json("POST", f"/v1/jobs/{job}/stop"))

    def enroll(self, job: str, party: str, public_key: str) -> dict[str, Any]:
        return dict(
            self._json("POST", f"/v1/jobs/{job}/parties", {"name": party, "public_key": public_key})
        )

    def evaluate(
        self, job: str, version: int, accuracy: float, samples: int, loss: float | None = None
    ) -> dict[str, Any]:
        data = {"version": version, "accuracy": accuracy, "samples": samples, "loss": loss}
        return dict(self._json("POST", f"/v1/jobs/{job}/evaluations", data))

    def model(self, job: str) -> tuple[bytes, int]:
        r = checked(self.http.send("GET", f"/v1/jobs/{job}/model", headers=self._h))
        return r.content, int(r.headers.get("x-fedtempo-version", "-1"))


def signer(credential: Credential, method: str, path: str) -> Callable[[bytes], dict[str, str]]:
    """Fresh signature headers (new timestamp and nonce) for every attempt."""
    return lambda body: credential.headers(method, path, body, time.time())

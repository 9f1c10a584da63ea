"""Security negatives at every route (SERVICE.md): none is accepted, each is a 401/403 with a
reason; TLS with a CA and certificate the test makes; no credential ever reaches the log."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
import torch

from fedtempo.service import auth
from fedtempo.service.client import Admin, ServiceError
from fedtempo.service.party import WorkTask
from tests.chaos.harness import chaos_job
from tests.chaos.negatives import Scene, run_matrix
from tests.service.helpers import InProcess
from tests.service.live import Server


def test_every_route_refuses_every_wrong_credential(tmp_path: Path) -> None:
    svc = InProcess(tmp_path / "state")
    try:
        m = run_matrix(svc)
    finally:
        svc.close()
    assert m.accepted == []
    assert m.controls_failed == []
    assert len(m.routes) >= 12 and len(m.cases) >= 11
    assert m.tried >= 100


def _certificates(d: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signs for 127.0.0.1: (ca, cert, key) PEM files."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("fedtempo test CA"))
        .issuer_name(name("fedtempo test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = d / "ca.pem", d / "server.pem", d / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@pytest.mark.slow
def test_tls_with_a_ca_the_test_makes_and_no_credential_in_the_log(tmp_path: Path) -> None:
    ca, cert, key = _certificates(tmp_path)
    srv = Server(tmp_path / "state", tls_files=(cert, key))
    srv.start()
    try:
        _, parties = chaos_job(srv.url, srv.token, 1, ca=ca)
        task = parties[0].ask()  # a signed party request over TLS, trusted through the CA
        assert isinstance(task, WorkTask)
        status, _ = parties[0].upload(task, parties[0].train(task, torch.zeros(15)))
        assert status == 200
        with pytest.raises(httpx.HTTPError):  # a client that does not trust the CA
            httpx.get(srv.url + "/v1/health", timeout=5)
        with pytest.raises(httpx.HTTPError):  # no plaintext on the TLS port
            httpx.get(srv.url.replace("https", "http") + "/v1/health", timeout=5)
        bad = Admin(srv.url, "wrong-token", ca=ca)
        with pytest.raises(ServiceError):
            bad.jobs()
    finally:
        srv.kill()
    log = srv.log.read_text()
    secrets = [srv.token, auth.b64(parties[0].cred.private_key), "wrong-token"]
    assert not [s for s in secrets if s in log]


def test_a_party_with_a_skewed_clock_is_told_by_how_much(tmp_path: Path) -> None:
    svc = InProcess(tmp_path / "state")
    try:
        scene = Scene(svc)
        path, body = f"/v1/jobs/{scene.job}/work", b'{"samples": 4, "wait_s": 0}'
        for skew, word in ((900.0, "ahead of"), (-900.0, "behind")):
            r = scene.send(
                scene.alice, "POST", path, body, "application/json", now=time.time() + skew
            )
            assert r.status_code == 401
            assert re.search(rf"clock is (899|900|901) s {word} the server's", r.json()["error"]), (
                r.text
            )
        ok = scene.send(scene.alice, "POST", path, body, "application/json", now=time.time() + 200)
        assert ok.status_code == 200  # within the window: a little skew is tolerated
    finally:
        svc.close()

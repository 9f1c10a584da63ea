"""``fedtempo serve``: run the app on uvicorn, with the TLS rules.

Plain HTTP is allowed on a loopback address only; any other address needs a certificate
(``--tls-cert``/``--tls-key``) or ``--tls-self-signed`` (a key and certificate made for this
state directory, its SHA-256 fingerprint printed so that parties can pin it).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import replace
from pathlib import Path

import uvicorn

from fedtempo.service.aggregation import AggregationSettings
from fedtempo.service.jobs import JobFactory


class ServeError(ValueError):
    """A serve command that must not start (the message says how to fix it)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def self_signed(state: Path, host: str) -> tuple[Path, Path, str]:
    """A key and certificate for ``host`` under ``state/tls`` (made once, then reused);
    returns their paths and the certificate's SHA-256 fingerprint."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    tls = state / "tls"
    cert_path, key_path = tls / "server.crt", tls / "server.key"
    if not cert_path.exists():
        tls.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
        alt: list[x509.GeneralName] = [x509.DNSName("localhost")]
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
        if host != "127.0.0.1":
            alt.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    from cryptography import x509 as _x509

    loaded = _x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert_path, key_path, loaded.fingerprint(hashes.SHA256()).hex(":")


def check_tls(host: str, cert: Path | None, key: Path | None, self_signed_tls: bool) -> None:
    if (cert is None) != (key is None):
        raise ServeError("--tls-cert and --tls-key go together")
    if cert is not None and self_signed_tls:
        raise ServeError("give either --tls-cert/--tls-key or --tls-self-signed, not both")
    if not is_loopback(host) and cert is None and not self_signed_tls:
        raise ServeError(
            f"refusing plain HTTP on {host}: it is not a loopback address. Enable TLS with "
            "--tls-cert FILE --tls-key FILE, or --tls-self-signed (parties then pass --ca "
            "STATE/tls/server.crt)"
        )


def serve(
    state: Path,
    factory: JobFactory,
    *,
    host: str = "127.0.0.1",
    port: int = 8750,
    cert: Path | None = None,
    key: Path | None = None,
    self_signed_tls: bool = False,
    admin_file: Path | None = None,
    announce: bool = True,
    aggregation: AggregationSettings | None = None,
    ray_address: str | None = None,
    cold_workers: bool = False,
) -> None:
    """Serve ``state`` (resumed if it exists) until interrupted."""
    from fedtempo.service.app import create_app
    from fedtempo.service.workers import ForkLauncher, Launcher, ProcessLauncher

    check_tls(host, cert, key, self_signed_tls)
    if self_signed_tls:
        cert, key, fingerprint = self_signed(state, host)
        if announce:
            print(f"TLS certificate {cert} (SHA-256 {fingerprint})", flush=True)
    state.mkdir(parents=True, exist_ok=True)
    launcher: Launcher = (ProcessLauncher if cold_workers else ForkLauncher)(state / "blobs")
    if ray_address is not None:
        from fedtempo.service.rayworkers import RayLauncher

        launcher = RayLauncher(state / "blobs", ray_address)
        aggregation = replace(aggregation or AggregationSettings(), workers=launcher.capacity())
    app = create_app(state, factory, aggregation=aggregation, launcher=launcher)
    token = app.state.service.new_admin_token
    if token is not None:
        if admin_file is not None:
            fd = os.open(admin_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(token + "\n")
            if announce:
                print(f"admin credential written to {admin_file} (shown nowhere else)", flush=True)
        elif announce:
            print(f"admin credential (shown once, keep it): {token}", flush=True)
    scheme = "https" if cert else "http"
    if announce:
        jobs, agg = len(app.state.service.jobs), app.state.service.aggregation.s
        print(
            f"fedtempo serving {state} on {scheme}://{host}:{port} ({jobs} jobs; "
            f"{agg.policy} aggregation, at most {agg.workers} {launcher.name} workers)",
            flush=True,
        )
    uvicorn.run(
        app,
        host=host,
        port=port,
        ssl_certfile=str(cert) if cert else None,
        ssl_keyfile=str(key) if key else None,
        log_level="warning",
        access_log=False,
    )

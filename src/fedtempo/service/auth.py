"""Credentials: an admin token for job management, an Ed25519 key pair per party and job.

A party signs every request over its method, path, party name, timestamp, nonce and the SHA-256
of its body (so a captured request cannot be replayed: the server remembers nonces for the
window, and a changed body breaks the signature). The admin token is random, shown once and
stored as its SHA-256. Neither the token nor a private key is ever logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

WINDOW_S = 300.0  # a signed request is accepted this many seconds either side of its timestamp
H_PARTY, H_TIME, H_NONCE, H_SIG = (
    "x-fedtempo-party",
    "x-fedtempo-time",
    "x-fedtempo-nonce",
    "x-fedtempo-signature",
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text.encode("ascii"))


def new_admin_token() -> str:
    return "ft-admin-" + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_matches(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(token_hash(token), stored_hash)


def signed_message(method: str, path: str, party: str, ts: str, nonce: str, body: bytes) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join([method.upper(), path, party, ts, nonce, digest]).encode("utf-8")


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Credential:
    """What a party needs to act in one job: the server, the job, its name and private key."""

    server: str
    job: str
    party: str
    private_key: bytes  # raw Ed25519 private bytes

    def key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.private_key)

    def headers(self, method: str, path: str, body: bytes, now: float) -> dict[str, str]:
        ts, nonce = f"{now:.3f}", secrets.token_urlsafe(16)
        sig = self.key().sign(signed_message(method, path, self.party, ts, nonce, body))
        return {H_PARTY: self.party, H_TIME: ts, H_NONCE: nonce, H_SIG: b64(sig)}

    def write(self, path: Path) -> None:
        """Write the credential file, readable by its owner only."""
        data = {
            "server": self.server,
            "job": self.job,
            "party": self.party,
            "private_key": b64(self.private_key),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)

    @staticmethod
    def read(path: Path) -> Credential:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return Credential(
                str(data["server"]),
                str(data["job"]),
                str(data["party"]),
                unb64(data["private_key"]),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a fedtempo party credential ({exc})") from None


def new_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_bytes(key: Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

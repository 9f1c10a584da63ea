"""The service's request bodies: JSON models, and reading a body under a size limit."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import BaseModel, Field

from fedtempo.service.jobs import MAX_COUNT, Rejected

JSON_LIMIT = 1 << 20  # bytes of a control request's JSON body
MAX_WAIT_S = 30.0  # the longest a long-poll is held


class JobRequest(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    spec: dict[str, Any]


class EnrollRequest(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    public_key: str = Field(description="the party's raw Ed25519 public key, urlsafe base64")


class WorkRequest(BaseModel):
    samples: int = Field(ge=0, le=MAX_COUNT)
    wait_s: float = Field(20.0, ge=0, le=MAX_WAIT_S)


class EvaluationRequest(BaseModel):
    """What an evaluator measured of one model version on its own held-out data."""

    version: int = Field(ge=0, le=MAX_COUNT)
    accuracy: float = Field(ge=0.0, le=1.0)
    loss: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    samples: int = Field(ge=1, le=MAX_COUNT)


async def read_body(request: Request, limit: int, content_type: str) -> bytes:
    got = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if got != content_type:
        raise Rejected(415, f"content type must be {content_type}, got {got or 'none'}")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise Rejected(413, f"body larger than the {limit}-byte limit for this request")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Rejected(413, f"body larger than the {limit}-byte limit for this request")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, model: type[BaseModel]) -> Any:
    body = await read_body(request, JSON_LIMIT, "application/json")
    try:
        return model.model_validate_json(body)
    except ValueError as exc:
        first = exc.errors()[0] if hasattr(exc, "errors") else {"msg": str(exc), "loc": ()}
        where = ".".join(str(x) for x in first.get("loc", ()))
        raise Rejected(422, f"{where or 'body'}: {first.get('msg')}") from None


# ---- what the OpenAPI schema says of bodies the handlers read themselves --------------------

SIGNED = [  # a party's signature headers (fedtempo.service.auth)
    {"name": h, "in": "header", "required": True, "schema": {"type": "string"}}
    for h in ("x-fedtempo-party", "x-fedtempo-time", "x-fedtempo-nonce", "x-fedtempo-signature")
]


def json_body(model: type[BaseModel], signed: bool = False) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads a ``model`` JSON body (and, ``signed``, a
    party's signature headers): clients and fuzzers (schemathesis) see what it takes."""
    extra: dict[str, Any] = {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }
    return extra | ({"parameters": SIGNED} if signed else {})


UPDATE_BODY: dict[str, Any] = {
    "parameters": SIGNED,
    "requestBody": {
        "required": True,
        "description": "a safetensors file: the delta as one float32 tensor per layer, and the "
        "envelope (task, base_version, samples, steps, loss) as its __metadata__",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
}

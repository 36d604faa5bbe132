"""Request bodies: size-capped JSON reading and strict validation into pydantic models.

Models used with :func:`validate` forbid unknown fields and are strict (a JSON string is never
coerced to a number, nor a number to a string), so wrong JSON types are a 422, never a guess.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.requests import Request

from services.api.problems import Problem

M = TypeVar("M", bound=BaseModel)

# Every request model uses this: unknown fields are errors, JSON types are taken literally.
STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request's JSON body; 413 past max_bytes, 415 for non-JSON, 400 when it does not parse."""
    ctype = request.headers.get("content-type", "application/json").split(";", 1)[0].strip().lower()
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise Problem(415, "unsupported_media_type", f"send application/json, not {ctype}")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise Problem(413, "body_too_large", f"body exceeds {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise Problem(413, "body_too_large", f"body exceeds {max_bytes} bytes")
        chunks.append(chunk)
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "invalid_json", f"body is not valid JSON: {exc}") from None


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic errors reduced to loc, msg and type (never echoing the input back)."""
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


def validate(model: type[M], data: Any) -> M:
    """Validate decoded JSON against a strict model; a 422 Problem lists every error."""
    try:
        # Through JSON again so strict mode applies JSON's own type rules (RFC 3339 strings are datetimes).
        return model.model_validate_json(orjson.dumps(data))
    except ValidationError as exc:
        raise Problem(422, "invalid_body", "the body does not match the schema",
                      errors=validation_errors(exc)) from None


def openapi_schemas(*models: type[BaseModel]) -> dict[str, Any]:
    """JSON Schemas (2020-12, as OpenAPI 3.1 uses) of models and their nested models, by name."""
    _, top = models_json_schema([(m, "validation") for m in models],
                                ref_template="#/components/schemas/{model}")
    return dict(top.get("$defs", {}))

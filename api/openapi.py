"""The query API's OpenAPI document as it answers: 400 (never 422), 401, 413, 429, 503 where they happen, and
the request body's real rules (catalogue names, the server's limits) where JSON Schema can say them."""

from __future__ import annotations

from typing import Any

from analytics_core.catalogue import Catalogue
from analytics_core.settings import Settings
from api.engine import known_zones
from api.models import ErrorBody

ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before asking again.", "schema": {"type": "integer"}}}

# `responses=` entries of the routes; every error body is an ErrorBody.
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorBody,
        "description": "A field breaks a rule: `field` names it, `rule` the rule (e.g. max_buckets, iana_zone). A body"
        " that is not JSON: field `body`, rule `json_invalid`, and `error` names the line and column (from 1, in"
        " characters) where it breaks and why, e.g. `body: invalid JSON at line 3, column 14: Expecting ','"
        " delimiter`.",
    },
    401: {
        "model": ErrorBody,
        "description": "No valid read key: `Authorization: Bearer <read key>` is required.",
        "headers": {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    },
    404: {"model": ErrorBody, "description": "No such funnel or experiment is defined (the list routes name them)."},
    413: {"model": ErrorBody, "description": "The body is above 64 KB."},
    429: {
        "model": ErrorBody,
        "description": "Too many requests: this read key asked more queries than allowed per window, or this"
        " address sent too many unknown keys (docs/API.md).",
        "headers": _RETRY_AFTER,
    },
    503: {
        "model": ErrorBody,
        "description": "The warehouse cannot be read now (busy, missing, rollups not built): retry.",
        "headers": _RETRY_AFTER,
    },
}

# One frame of the live stream (OpenAPI 3.1 describes a text/event-stream body event by event); `data` is JSON.
SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["event", "data"],
    "additionalProperties": False,
    "properties": {
        "event": {"enum": ["counters", "correction", "unavailable", "error"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}

READY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["ready", "unavailable"]},
        "warehouse": {"type": "string"},
        "replica": {"type": "string"},
        "realtime": {"type": "string"},
    },
    "required": ["status", "warehouse", "realtime"],
    "additionalProperties": {"type": "string"},
}


def describe(schema: dict[str, Any], settings: Settings, catalogue: Catalogue) -> dict[str, Any]:
    """FastAPI's document made true to the API: no 422 (bad input answers 400), every /api/v1 route behind the
    read key (HTTP Bearer, 401 without it), catalogue names as enums, the server's limits as maxima."""
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    bearer = next(
        (n for n, s in schemes.items() if (s.get("type"), s.get("scheme", "").lower()) == ("http", "bearer")), None
    )
    if bearer is None:
        bearer = "readKey"
        schemes[bearer] = {"type": "http", "scheme": "bearer", "description": "The tenant's read key."}
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.get("responses", {})
            responses.pop("422", None)
            if not path.startswith("/api/v1/"):
                continue
            operation.setdefault("security", [{bearer: []}])
            for status in (401, 429):  # no read key; failed keys from this address throttled (tenants/throttle.py)
                responses.setdefault(
                    str(status),
                    {
                        "description": ERRORS[status]["description"],
                        "headers": ERRORS[status]["headers"],
                        "content": ERROR_CONTENT,
                    },
                )
    components = schema["components"].setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    components.setdefault("ErrorBody", ErrorBody.model_json_schema())

    metrics, dimensions = sorted(catalogue.metrics), sorted(catalogue.dimensions)
    request = components.get("QueryRequest", {}).get("properties", {})
    if request:
        request["metrics"]["items"]["enum"] = metrics
        request["metrics"]["uniqueItems"] = True
        request["group_by"]["items"] = {"type": "string", "enum": dimensions}
        request["group_by"]["uniqueItems"] = True
        request["group_by"]["maxItems"] = min(request["group_by"].get("maxItems", len(dimensions)), len(dimensions))
        request["filters"]["description"] = (
            f"At most {settings.api_max_filter_values} values over all filters; eq takes exactly one value."
        )
        for option in request["limit"].get("anyOf", []):
            if option.get("type") == "integer":
                option["maximum"] = settings.api_max_rows
        request["timezone"]["enum"] = sorted(known_zones())  # the names of the zone database, and nothing else
    row = components.get("Row", {})
    if "rest" in row.get("properties", {}) and "rest" not in row.get("required", []):
        row.setdefault("required", []).append("rest")  # a default in Python, written in every row of every answer
    filter_ = components.get("Filter", {}).get("properties", {})
    if filter_:
        filter_["dimension"]["enum"] = dimensions
        filter_["values"]["maxItems"] = min(filter_["values"].get("maxItems", 1000), settings.api_max_filter_values)
    return schema

"""The query API's answers: a JSON body already rendered, or an ErrorBody (counted by app.RequestMetrics)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi.responses import JSONResponse, Response

log = logging.getLogger("api")


def ok(body: bytes) -> Response:
    return Response(body, media_type="application/json")


def error(
    status: int,
    message: str,
    field: str | None = None,
    rule: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {"error": printable(message)}
    if field is not None:
        body["field"] = printable(field)
        body["rule"] = printable(rule) if rule is not None else None
    if status >= 500:
        log.warning("request refused", extra={"status": status, "reason": message})
    return JSONResponse(body, status_code=status, headers=headers)


def printable(text: str) -> str:
    """Text that encodes as UTF-8: a lone surrogate from the request (JSON "\\ud800") written as \\ud800."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def field_name(loc: Any) -> str:
    """A pydantic error location as the engine names fields: ("body", "filters", 0, "values") → filters[0].values."""
    out = ""
    for i, part in enumerate(loc):
        if i == 0 and part == "body":
            continue
        out += f"[{part}]" if isinstance(part, int) else f"{'.' if out else ''}{part}"
    return out or "body"

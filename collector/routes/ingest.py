"""The request handling every ingest route shares: read the body, decode, prepare, produce, answer.

Each protocol (Segment, PostHog, and the others in collector/routes/) brings an adapter (document →
Segment-shaped messages and the key, collector/adapters.py) and a `Wire`: how its body is decoded and how
its SDKs expect the answer. Everything between — authentication, limits, validation, enrichment, dedupe,
dead letters and metrics — is the same code for all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from collector.body import BodyError, parse_json, read_body
from collector.ingest import Adapter, IngestError, Prepared, prepare, produce
from collector.state import CollectorState

log = logging.getLogger("collector")
SUCCESS: dict[str, object] = {"code": 200, "status": 1, "error": None, "results": {}}


def json_document(body: bytes, request: Request) -> Any:
    """The body as one JSON document, whatever Content-Type says (browsers send JSON as text/plain)."""
    return parse_json(body)


def segment_success(prepared: Prepared) -> Response:
    return JSONResponse(SUCCESS)


def segment_error(status: int, message: str, retry_after: int | None) -> Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    body = {"code": status, "status": 0, "error": message, "results": {}}
    return JSONResponse(body, status_code=status, headers=headers)


@dataclass(frozen=True)
class Wire:
    """A protocol's body decoding and answers. `decode` gets the decompressed body (empty for a GET) and the
    request (query string, headers) and raises BodyError for a body no message can be taken from."""

    decode: Callable[[bytes, Request], Any] = json_document
    success: Callable[[Prepared], Response] = segment_success
    error: Callable[[int, str, int | None], Response] = segment_error


SEGMENT_WIRE = Wire()


async def handle(request: Request, state: CollectorState, adapter: Adapter, wire: Wire = SEGMENT_WIRE) -> Response:
    peer = request.client.host if request.client else None
    # An address blocked for sending unknown keys is refused before its body is read (a dict lookup).
    blocked_for = state.auth_throttle.retry_after(peer)
    if blocked_for is not None:
        return _error(state, wire, 429, state.auth_throttle.refusal(blocked_for, "write key"), blocked_for)
    try:
        body = await read_body(
            request.stream(), request.headers.get("content-encoding"), state.settings.collector_max_batch_bytes
        )
        document = wire.decode(body, request)
        headers = request.headers
        prepared = await prepare(state, document, adapter, headers.get("authorization"), peer, headers.get("origin"))
        await produce(state, prepared)
    except BodyError as exc:
        return _error(state, wire, exc.status, str(exc))
    except IngestError as exc:
        return _error(state, wire, exc.status, exc.message, exc.retry_after)
    return wire.success(prepared)


def _error(state: CollectorState, wire: Wire, status: int, message: str, retry_after: int | None = None) -> Response:
    state.metrics.rejected.labels(str(status)).inc()
    if status >= 500:
        log.warning("request refused", extra={"status": status, "reason": message})
    return wire.error(status, message, retry_after)

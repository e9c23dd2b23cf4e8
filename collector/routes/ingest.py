"""The request handling every ingest route shares: read the body, parse, prepare, produce, answer."""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from collector.body import BodyError, parse_json, read_body
from collector.ingest import Adapter, IngestError, prepare, produce
from collector.state import CollectorState

log = logging.getLogger("collector")
SUCCESS: dict[str, object] = {"code": 200, "status": 1, "error": None, "results": {}}


async def handle(request: Request, state: CollectorState, adapter: Adapter) -> Response:
    peer = request.client.host if request.client else None
    # An address blocked for sending unknown keys is refused before its body is read (a dict lookup).
    blocked_for = state.auth_throttle.retry_after(peer)
    if blocked_for is not None:
        return _error(state, 429, state.auth_throttle.refusal(blocked_for, "write key"), blocked_for)
    try:
        body = await read_body(
            request.stream(), request.headers.get("content-encoding"), state.settings.collector_max_batch_bytes
        )
        document = parse_json(body)
        prepared = await prepare(state, document, adapter, request.headers.get("authorization"), peer)
        await produce(state, prepared)
    except BodyError as exc:
        return _error(state, exc.status, str(exc))
    except IngestError as exc:
        return _error(state, exc.status, exc.message, exc.retry_after)
    return JSONResponse(SUCCESS)


def _error(state: CollectorState, status: int, message: str, retry_after: int | None = None) -> Response:
    state.metrics.rejected.labels(str(status)).inc()
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    if status >= 500:
        log.warning("request refused", extra={"status": status, "reason": message})
    body = {"code": status, "status": 0, "error": message, "results": {}}
    return JSONResponse(body, status_code=status, headers=headers)

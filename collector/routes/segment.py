"""Segment's tracking API: /v1/batch, /v1/import and one route per single-message type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

from fastapi import APIRouter, Request
from fastapi.responses import Response

from collector import adapters, openapi
from collector.deps import StateDep
from collector.routes.ingest import handle

SEGMENT_TYPES = ("track", "identify", "page", "screen", "group", "alias")
# analytics-java posts to /v1/import/ and analytics-ruby to /v1/import: the same batch body as /v1/batch. Both
# spellings are routes of their own, because a trailing-slash redirect costs a round trip and a client that does
# not follow a POST's 307 would lose the batch.
IMPORT_PATHS = ("/v1/import", "/v1/import/")
router = APIRouter(tags=["segment"])


@router.post("/v1/batch", summary="A batch of Segment messages.", openapi_extra=openapi.SEGMENT_BATCH)
async def segment_batch(request: Request, state: StateDep) -> Response:
    return await handle(request, state, adapters.segment_batch)


for _path in IMPORT_PATHS:
    router.add_api_route(
        _path,
        segment_batch,
        methods=["POST"],
        summary="A batch of Segment messages (analytics-java, analytics-ruby).",
        openapi_extra=openapi.segment_import(_path),
        name="segment_import" + ("_slash" if _path.endswith("/") else ""),
    )


def single_route(message_type: str) -> Callable[[Request, StateDep], Awaitable[Response]]:
    """The handler of one Segment message of `message_type` (Segment's /v1/<type>, analytics.js's short paths)."""
    adapter = partial(adapters.segment_single, message_type)

    async def route(request: Request, state: StateDep) -> Response:
        return await handle(request, state, adapter)

    return route


for _message_type in SEGMENT_TYPES:
    router.add_api_route(
        f"/v1/{_message_type}",
        single_route(_message_type),
        methods=["POST"],
        summary=f"One Segment {_message_type} message.",
        openapi_extra=openapi.single_operation(_message_type),
        name=f"segment_{_message_type}",
    )

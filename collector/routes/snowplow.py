"""Snowplow's tracker protocol v2: POST /com.snowplowanalytics.snowplow/tp2 and the GET pixel /i.

Only GET /i is here: POST /i is Segment's (analytics.js' short path), defined with the browser routes.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from collector.deps import StateDep
from collector.protocols import snowplow
from collector.protocols.openapi import snowplow as operation
from collector.routes.ingest import Wire, handle
from collector.routes.methods import SharedPathRoute

POST_WIRE = Wire(snowplow.decode_post, snowplow.success_post, snowplow.error)
PIXEL_WIRE = Wire(snowplow.decode_get, snowplow.success_pixel, snowplow.error)
router = APIRouter(tags=["snowplow"], route_class=SharedPathRoute)


@router.post(
    "/com.snowplowanalytics.snowplow/tp2",
    summary="Snowplow tracker protocol v2 events.",
    response_class=Response,
    openapi_extra=operation("POST"),
)
async def snowplow_post(request: Request, state: StateDep) -> Response:
    return await handle(request, state, snowplow.events, POST_WIRE)


@router.get(
    "/i",
    summary="Snowplow's GET pixel: one event in the query string.",
    response_class=Response,
    openapi_extra=operation("GET"),
)
async def snowplow_pixel(request: Request, state: StateDep) -> Response:
    return await handle(request, state, snowplow.events, PIXEL_WIRE)

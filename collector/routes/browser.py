"""Segment's analytics.js (@segment/analytics-next) in browsers: its short paths and its settings document.

analytics-next loads `<cdnURL>/v1/projects/<writeKey>/settings`, then posts each event to
`{protocol}://{apiHost}/<first letter of its type>` (t, p, i, g, a, s), or batches to `/b`, with the write key in
the body and as Basic auth. So a page sends here with the stock snippet when the snippet's CDN is this collector:
the settings document names this collector as apiHost.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from collector import adapters, browser, browser_openapi
from collector.deps import StateDep
from collector.ingest import IngestError, refused_origin
from collector.routes.ingest import handle, segment_error
from collector.routes.methods import SharedPathRoute
from collector.routes.segment import single_route
from collector.state import CollectorState
from tenants import Tenant

# analytics-next's path is the first letter of the message type.
SHORT_PATHS = {"t": "track", "p": "page", "i": "identify", "g": "group", "a": "alias", "s": "screen"}
# SharedPathRoute: POST /i (identify) shares its path with Snowplow's GET /i pixel (collector/routes/methods.py).
router = APIRouter(tags=["browser"], route_class=SharedPathRoute)


async def configured_tenant(request: Request, state: CollectorState, key: str | None, unknown: IngestError) -> Tenant:
    """The tenant whose write key a configuration request (settings, PostHog's config and flags) names.

    Like an ingest request: an address blocked for unknown keys gets 429, an unknown key is counted for that
    block (and answered `unknown`), and a browser page whose origin the tenant does not allow gets 403."""
    peer = request.client.host if request.client else None
    blocked_for = state.auth_throttle.retry_after(peer)
    if blocked_for is not None:
        raise IngestError(429, state.auth_throttle.refusal(blocked_for, "write key"), blocked_for)
    tenant = state.keys.tenant_for_write_key(key) if key else None
    if tenant is None:
        blocked_for = await state.auth_throttle.failed(peer) if key else None
        if blocked_for is not None:
            raise IngestError(429, state.auth_throttle.refusal(blocked_for, "write key"), blocked_for)
        raise unknown
    origin = request.headers.get("origin")
    if origin is not None and not tenant.settings.allows_origin(origin):
        raise IngestError(403, refused_origin(origin))
    return tenant


def error_answer(exc: IngestError) -> Response:
    return segment_error(exc.status, exc.message, exc.retry_after)


@router.get(
    "/v1/projects/{write_key}/settings",
    summary="analytics.js' settings document: send this write key's events here.",
    response_class=Response,
    openapi_extra=browser_openapi.SEGMENT_SETTINGS,
)
async def segment_settings(request: Request, state: StateDep) -> Response:
    # Read here rather than as a parameter, so FastAPI adds no 422 the route never answers to the document.
    write_key: str = request.path_params["write_key"]
    host = browser.api_host(request)
    if host is None:
        return segment_error(400, "Host header is not host[:port]: the settings name the host the browser used", None)
    unknown = IngestError(404, "unknown write key: no settings for it (keys are per tenant; check the snippet's key)")
    try:
        await configured_tenant(request, state, write_key, unknown)
    except IngestError as exc:
        return error_answer(exc)
    return JSONResponse(browser.segment_settings(write_key, host, request.url.scheme))


async def segment_short_batch(request: Request, state: StateDep) -> Response:
    return await handle(request, state, adapters.segment_batch)


for _path, _message_type in SHORT_PATHS.items():
    router.add_api_route(
        f"/{_path}",
        single_route(_message_type),
        methods=["POST"],
        summary=f"One analytics.js {_message_type} message.",
        openapi_extra=browser_openapi.short_operation(_message_type),
        name=f"analytics_js_{_message_type}",
    )
router.add_api_route(
    "/b",
    segment_short_batch,
    methods=["POST"],
    summary="A batch of analytics.js messages (its batching delivery strategy).",
    openapi_extra=browser_openapi.SHORT_BATCH,
    name="analytics_js_batch",
)

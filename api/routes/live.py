"""Live numbers over Server-Sent Events (api/live_hub.py streams them)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.deps import SettingsDep, StateDep, TenantDep
from api.live_hub import LiveLimitError, LiveResponse
from api.openapi import ERROR_CONTENT, ERRORS, SSE_EVENT
from api.responses import error

router = APIRouter(prefix="/api/v1", tags=["query"])


@router.get(
    "/live",
    summary="Server-Sent Events: live counters on every update and every few seconds; corrections.",
    # Response, not LiveResponse: FastAPI would give every status the stream's media type.
    response_class=Response,
    status_code=200,
    responses={
        200: {
            "description": "The stream of SSE frames (docs/API.md, Live numbers).",
            "content": {"text/event-stream": {"schema": SSE_EVENT}},
        },
        429: {
            **ERRORS[429],
            "content": ERROR_CONTENT,
            "description": "This read key has its limit of live streams open (per process).",
        },
        503: {
            **ERRORS[503],
            "content": ERROR_CONTENT,
            "description": "This API process serves its limit of live streams.",
        },
    },
)
async def live(request: Request, who: TenantDep, state: StateDep, settings: SettingsDep) -> Response:
    key = request.headers.get("authorization", "").partition(" ")[2].strip()  # checked by `tenant`
    try:
        opened = state.live_hub.open(who.tenant_id, key)  # a slot, freed when the stream ends
    except LiveLimitError as exc:
        return error(exc.status, str(exc), headers={"Retry-After": str(settings.api_retry_after_s)})
    return LiveResponse(opened, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

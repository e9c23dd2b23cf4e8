"""PostHog's capture API: /batch/."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from collector import adapters, openapi
from collector.deps import StateDep
from collector.routes.ingest import handle

router = APIRouter(tags=["posthog"])


@router.post("/batch/", summary="A PostHog capture batch.", openapi_extra=openapi.POSTHOG_BATCH)
async def posthog_batch(request: Request, state: StateDep) -> Response:
    return await handle(request, state, adapters.posthog_batch)

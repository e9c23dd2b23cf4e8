"""Amplitude's HTTP V2 API (/2/httpapi) and Batch API (/batch).

/batch is PostHog's /batch/ without its slash, which used to answer 307 to /batch/ (analytics_core/serving.py's
relative_slash_redirects): a body with `batch` and without `events` (PostHog's) still gets that 307, so
PostHog clients see no change, and /batch/ itself is PostHog's route alone (collector/routes/posthog.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from collector.deps import StateDep
from collector.protocols import amplitude
from collector.protocols.openapi import amplitude as operation
from collector.routes.ingest import Wire, handle

router = APIRouter(tags=["amplitude"])


@router.post(
    "/2/httpapi", summary="Amplitude HTTP V2 events.", response_class=Response, openapi_extra=operation("/2/httpapi")
)
async def amplitude_http_v2(request: Request, state: StateDep) -> Response:
    answers = amplitude.Answers(state.keys)
    return await handle(request, state, amplitude.batch, Wire(answers.decode, answers.success, answers.error))


@router.post(
    "/batch",
    summary="Amplitude Batch API events (PostHog bodies: 307 to /batch/).",
    response_class=Response,
    openapi_extra=operation("/batch"),
)
async def amplitude_batch(request: Request, state: StateDep) -> Response:
    answers = amplitude.BatchAnswers(state.keys)
    try:
        return await handle(request, state, amplitude.batch, Wire(answers.decode, answers.success, answers.error))
    except amplitude.NotAmplitude:
        return RedirectResponse(amplitude.redirect_target(request), status_code=307)

"""PostHog's capture API for its server SDKs (/batch/) and posthog-js in browsers (/e/, /i/v0/e/, …), and the
configuration posthog-js asks for before it sends: its remote config, /decide/ and /flags/ (no feature flags).

Every capture path takes every body shape and encoding any PostHog SDK sends (collector/browser.py decodes,
collector/adapters.py's posthog_capture reshapes). Session recordings (/s/) are not taken: the config turns
recording off.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from collector import adapters, browser, browser_openapi
from collector.body import BodyError, read_body
from collector.deps import StateDep
from collector.ingest import IngestError, key_from_basic_auth
from collector.routes.browser import configured_tenant, error_answer
from collector.routes.ingest import Wire, handle

# /track/ is not among them: it is Mixpanel's /track (collector/routes/mixpanel.py), whose body shape PostHog's
# capture API copied, so an old posthog-js that posts there is read as Mixpanel (events named as sent).
CAPTURE_PATHS = ("/batch/", "/e/", "/i/v0/e/", "/capture/")
FLAGS_PATHS = ("/decide/", "/flags/")
OTHER_METHODS = ["PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "QUERY"]
POSTHOG_WIRE = Wire(decode=browser.posthog_document)
router = APIRouter(tags=["posthog"])


async def capture(request: Request, state: StateDep) -> Response:
    return await handle(request, state, adapters.posthog_capture, POSTHOG_WIRE)


for _path in CAPTURE_PATHS:
    router.add_api_route(
        _path,
        capture,
        methods=["POST"],
        summary="PostHog events (posthog-js, the server SDKs).",
        openapi_extra=browser_openapi.POSTHOG_CAPTURE,
        name=f"posthog_capture_{_path.strip('/').replace('/', '_')}",
    )


async def flags(request: Request, state: StateDep) -> Response:
    """/decide/ and /flags/, GET or POST: the token as Basic auth, in the query, or in the (posthog-encoded) body."""
    try:
        limit = state.settings.collector_max_batch_bytes
        body = await read_body(request.stream(), request.headers.get("content-encoding"), limit)
        document = browser.posthog_document(body, request) if body and request.method == "POST" else {}
        if not isinstance(document, dict):
            raise BodyError(400, 'body: must be a JSON object, e.g. {"token": "<write key>"}')
        query = request.query_params
        token = (
            key_from_basic_auth(request.headers.get("authorization"))
            or query.get("token")
            or query.get("api_key")
            or browser.posthog_token(document)
        )
        unknown = IngestError(401, "missing or unknown project token: send the write key as `token` in the body")
        await configured_tenant(request, state, token, unknown)
    except BodyError as exc:
        return error_answer(IngestError(exc.status, str(exc)))
    except IngestError as exc:
        return error_answer(exc)
    return JSONResponse(browser.posthog_flags(token or ""))


async def other_method(request: Request) -> Response:
    return JSONResponse({"detail": "Method Not Allowed"}, status_code=405, headers={"Allow": "GET, POST"})


for _path in FLAGS_PATHS:
    # A route per method, so each is documented with its own operation id; the first would answer any other
    # method with a 405 naming itself alone, hence the third.
    for _method in ("POST", "GET"):
        router.add_api_route(
            _path,
            flags,
            methods=[_method],
            summary="posthog-js' feature flags and config: none, and send events here.",
            response_class=Response,
            openapi_extra=browser_openapi.posthog_flags_operation(_method),
            name=f"posthog_{_path.strip('/')}_{_method.lower()}",
        )
    router.add_api_route(_path, other_method, methods=OTHER_METHODS, include_in_schema=False)


@router.get(
    "/array/{token}/config",
    summary="posthog-js' remote config: send events here, gzipped; no flags, recordings or surveys.",
    response_class=Response,
    openapi_extra=browser_openapi.POSTHOG_CONFIG,
)
async def posthog_config(request: Request, state: StateDep) -> Response:
    token: str = request.path_params["token"]  # not a parameter: FastAPI would document a 422 never answered
    try:
        await configured_tenant(request, state, token, _unknown_token())
    except IngestError as exc:
        return error_answer(exc)
    return JSONResponse(browser.posthog_config(token))


@router.get(
    "/array/{token}/config.js",
    summary="The same remote config as a script, which posthog-js loads before it asks for the JSON.",
    response_class=Response,
    openapi_extra=browser_openapi.POSTHOG_CONFIG_JS,
)
async def posthog_config_js(request: Request, state: StateDep) -> Response:
    token: str = request.path_params["token"]
    try:
        await configured_tenant(request, state, token, _unknown_token())
    except IngestError as exc:
        return error_answer(exc)
    return Response(browser.posthog_config_script(token), media_type="text/javascript")


def _unknown_token() -> IngestError:
    return IngestError(404, "unknown project token: no config for it (the token is the tenant's write key)")

"""Mixpanel's ingestion API: /track, /import and /engage, with or without the trailing slash; /track and /engage
also as GET with ?data= (as mixpanel-js can send them)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response

from collector.deps import StateDep
from collector.ingest import Adapter
from collector.protocols import mixpanel
from collector.protocols.openapi import mixpanel as operation
from collector.routes.ingest import Wire, handle
from collector.routes.methods import SharedPathRoute

ADAPTERS: dict[str, Adapter] = {"track": mixpanel.events, "import": mixpanel.events, "engage": mixpanel.profiles}
router = APIRouter(tags=["mixpanel"], route_class=SharedPathRoute)


def _route(endpoint: str) -> Callable[[Request, StateDep], Awaitable[Response]]:
    adapter = ADAPTERS[endpoint]

    async def route(request: Request, state: StateDep) -> Response:
        # A wire per request: the answer depends on what its decoder read (verbose=1, strict=1, the events).
        answers = mixpanel.Answers(endpoint, state.topics.events_dlq)
        return await handle(request, state, adapter, Wire(answers.decode, answers.success, answers.error))

    return route


for _endpoint in ADAPTERS:
    _methods = ("POST",) if _endpoint == "import" else ("POST", "GET")
    for _method in _methods:
        for _path in (f"/{_endpoint}", f"/{_endpoint}/"):
            router.add_api_route(
                _path,
                _route(_endpoint),
                methods=[_method],
                summary=f"Mixpanel /{_endpoint} ({_method}).",
                response_class=Response,
                openapi_extra=operation(_endpoint, _method),
                name=f"mixpanel_{_endpoint}_{_method.lower()}{'_slash' if _path.endswith('/') else ''}",
            )

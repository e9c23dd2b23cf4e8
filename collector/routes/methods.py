"""Routes that share a path across methods, each documented on its own (Mixpanel's GET and POST /track).

Starlette answers a method no route takes with the Allow header of the first route of that path alone, so /track
(POST, then GET) would say `Allow: POST`. A router whose route_class is SharedPathRoute answers with every method
of the path instead, whichever router defined them (a path's routes may come from different routers: GET /i is
Snowplow's, POST /i Segment's).
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException
from fastapi.routing import APIRoute
from starlette.types import Receive, Scope, Send

# Path → the methods of its SharedPathRoutes. The same for every app: a path always has the same routes.
PATH_METHODS: dict[str, set[str]] = {}


class SharedPathRoute(APIRoute):
    def __init__(self, path: str, endpoint: Any, **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        PATH_METHODS.setdefault(self.path_format, set()).update(self.methods or ())

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            allowed = ", ".join(sorted(PATH_METHODS.get(self.path_format, self.methods)))
            raise HTTPException(status_code=405, headers={"Allow": allowed})
        await super().handle(scope, receive, send)

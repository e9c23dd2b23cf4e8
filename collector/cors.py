"""CORS for browser SDKs: preflights answered, and every answer readable by the page that sent the request.

Write keys are public and an event POST with a text/plain body is a "simple" request a browser sends without
asking, so CORS cannot keep a site from sending events: which pages may send them is the tenant's
`allowed_origins`, enforced by the collector once the key names the tenant (403, collector/ingest.py). CORS
only decides whether the page's script may read the answer, and an SDK that cannot read it sees a network
error and retries for ever. So:

- A preflight (OPTIONS with Origin and Access-Control-Request-Method) comes before any key is known: it is
  answered 204, permissively (the methods the collector has, the headers asked for, cached by the browser).
- Every other answer to a request with an Origin, success or error (401, 403, 429, …), carries
  Access-Control-Allow-Origin with that origin, so the SDK reads the status and the reason and drops or
  retries as the status says; Retry-After is exposed to it.

The operational paths (health, metrics, the API docs) get no CORS headers: no page needs them.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ALLOW_METHODS = b"POST, GET, OPTIONS"
DEFAULT_ALLOW_HEADERS = b"content-type, authorization"
MAX_AGE_S = 7200  # Chromium's cap on a cached preflight; Firefox allows 86,400
# A header list as Access-Control-Request-Headers carries it: names (RFC 9110 tokens), commas, spaces.
_HEADER_LIST = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+(?:\s*,\s*[!#$%&'*+.^_`|~0-9A-Za-z-]+)*")


class Cors:
    """ASGI middleware: CORS preflights and response headers on every path but `exempt` (exact paths)."""

    def __init__(self, app: ASGIApp, exempt: frozenset[str]) -> None:
        self.app = app
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])  # lower-case names; a repeated header keeps its last value
        origin = headers.get(b"origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
            await _preflight(send, origin, headers)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *_answer_headers(origin)]}
            await send(message)

        await self.app(scope, receive, send_with_cors)


def allow_origin(origin: bytes) -> bytes:
    """The Access-Control-Allow-Origin value for a request's Origin: itself; "*" for the opaque origin "null"
    (a sandboxed frame, a file:// page), which browsers match only against "*"."""
    return b"*" if origin == b"null" else origin


def _answer_headers(origin: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"access-control-allow-origin", allow_origin(origin)),
        (b"access-control-expose-headers", b"Retry-After"),
        (b"vary", b"Origin"),
    ]


async def _preflight(send: Send, origin: bytes, headers: dict[bytes, bytes]) -> None:
    asked = headers.get(b"access-control-request-headers", b"").strip()
    allow_headers = asked if _HEADER_LIST.fullmatch(asked) else DEFAULT_ALLOW_HEADERS
    answer = [
        *_answer_headers(origin),
        (b"access-control-allow-methods", ALLOW_METHODS),
        (b"access-control-allow-headers", allow_headers),
        (b"access-control-max-age", str(MAX_AGE_S).encode()),
        (b"vary", b"Access-Control-Request-Method, Access-Control-Request-Headers"),
        (b"content-length", b"0"),
    ]
    # Chromium's Private Network Access: a public page sending to a collector on a private address asks first.
    if headers.get(b"access-control-request-private-network") == b"true":
        answer.append((b"access-control-allow-private-network", b"true"))
    await send({"type": "http.response.start", "status": 204, "headers": answer})
    await send({"type": "http.response.body", "body": b""})

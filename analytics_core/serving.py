"""How both HTTP services (the collector and the query API) are served: uvicorn's options and what it lacks.

uvicorn 0.55 with httptools (what `uvicorn[standard]` runs) bounds only the idle time between two requests on a
kept-alive connection (`timeout_keep_alive`). It has no timeout for a request head: a new connection that sends
nothing, or a head sent a byte every few seconds, is held for ever; and no size limit for a head with httptools
(`h11_max_incomplete_event_size` applies to h11 only): a 13 MB header line was read whole. It has no timeout for a
body either. So:

- `HeadLimitsProtocol` (uvicorn's httptools protocol, subclassed): a head must be complete within
  `http_head_timeout_s` of the connection (or, on a kept-alive one, of its first byte) and hold at most
  `http_max_head_bytes`; else 408 / 431 and the connection is closed. A connection that sent nothing is closed
  without an answer (an answer nobody asked for could be read as the answer to the client's next request).
- `BodyTimeout` (ASGI middleware): the body must be received whole within `http_body_timeout_s` after the head,
  else 408 and the connection is closed; an app that answers before reading the whole body closes the connection,
  so the rest of a slow body is not waited for either.
- `relative_slash_redirects`: Starlette answers /path/ for /path (and the reverse) with a 307 whose Location is
  built from the Host header (`Host: evil.example` → `http://evil.example/v1/batch`); here it is relative.
- `invalid_json`, `undecodable_json`: the 400 message both services give for a body that is not JSON, naming the
  line and column where it breaks (the collector parses with orjson, the query API with FastAPI's json).

`server_options(settings)` is what `analytics collector` and `analytics api` pass to uvicorn.run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import quote

import orjson
from fastapi import FastAPI
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from analytics_core.settings import Settings

KEEP_ALIVE_S = 5  # uvicorn's default, said here: how long an idle kept-alive connection is held


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.run / uvicorn.Config keyword arguments bounding slow or large request heads and idle connections.

    The protocol goes as a functools.partial of a module-level class: uvicorn pickles its config for each worker
    process (spawn), and a partial of an importable class with numbers is picklable.
    """
    protocol = partial(
        HeadLimitsProtocol, head_timeout_s=settings.http_head_timeout_s, max_head_bytes=settings.http_max_head_bytes
    )
    return {"http": protocol, "timeout_keep_alive": KEEP_ALIVE_S}


def error_json(status: int, message: str) -> bytes:
    """An error body both services' clients read: the collector's shape, whose `error` the query API's has too."""
    return orjson.dumps({"code": status, "status": 0, "error": message, "results": {}})


class HeadLimitsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a time and a size limit for request heads."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        head_timeout_s: float,
        max_head_bytes: int,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._head_timeout_s = head_timeout_s
        self._max_head_bytes = max_head_bytes
        self._head_timer: asyncio.TimerHandle | None = None
        self._in_head = True  # between a request's first byte (or the connection) and the end of its head
        self._head_started = False  # some of the head arrived
        self._head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self._head_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self._max_head_bytes and not self.transport.is_closing():
            self._refuse(431, f"request head is larger than {self._max_head_bytes} bytes: send smaller headers")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = self._head_started = True
        if self._head_timer is None:  # the next request on a kept-alive connection: its head starts now
            self._head_timer = self.loop.call_later(self._head_timeout_s, self._head_timed_out)

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        self._in_head = self._head_started = False
        self._head_bytes = 0
        super().on_headers_complete()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._in_head:
            return
        if self._head_started:
            self._refuse(408, f"request head not received within {self._head_timeout_s:g} s: send it at once")
        else:
            self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        self._stop_head_timer()
        if self.cycle is None or self.cycle.response_complete:  # else a pipelined answer is still being sent
            body = error_json(status, message)
            self.transport.write(
                b"".join(
                    [
                        STATUS_LINE[status],
                        b"content-type: application/json\r\n",
                        b"content-length: %d\r\n" % len(body),
                        b"connection: close\r\n\r\n",
                        body,
                    ]
                )
            )
        self.transport.close()


class BodyTimedOut(Exception):
    """Raised to the app from `receive` when its request body did not arrive in time (the 408 is already sent)."""


class BodyTimeout:
    """408 when a request body is not received whole within `seconds` of the request's start (its head).

    The app's `receive` waits at most until that deadline; when it passes before the body's last chunk, the 408
    is sent (unless the app already started an answer) with `Connection: close`, the app gets BodyTimedOut from
    `receive`, and whatever it sends or raises afterwards is dropped. `on_timeout` is called once per 408 (the
    collector counts it). An answer started before the whole body was read also closes the connection, so no
    one waits for the rest of that body.
    """

    def __init__(
        self,
        app: ASGIApp,
        seconds: float,
        error_body: Callable[[int, str], bytes] = error_json,
        on_timeout: Callable[[], None] | None = None,
    ) -> None:
        self.app = app
        self.seconds = seconds
        self.error_body = error_body
        self.on_timeout = on_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.seconds
        body_done = False
        timed_out = False
        answering = False

        async def receive_in_time() -> Message:
            nonlocal body_done, timed_out
            if body_done or timed_out:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                timed_out = True
                if not answering:
                    await self._refuse(send)
                raise BodyTimedOut(f"request body not received within {self.seconds:g} s") from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def send_unless_refused(message: Message) -> None:
            nonlocal answering
            if timed_out:
                return
            if message["type"] == "http.response.start":
                answering = True
                if not body_done and _has_body(scope):
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, receive_in_time, send_unless_refused)
        except Exception:
            if not timed_out:
                raise

    async def _refuse(self, send: Send) -> None:
        if self.on_timeout is not None:
            self.on_timeout()
        message = f"request body not received within {self.seconds:g} s: send the whole body at once, then retry"
        body = self.error_body(408, message)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 408, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if (name == b"content-length" and value.strip() != b"0") or name == b"transfer-encoding":
            return True
    return False


def relative_slash_redirects(app: FastAPI) -> FastAPI:
    """`app` with Starlette's trailing-slash redirect (/v1/batch/ → /v1/batch) answered with a relative Location."""
    app.router.redirect_slashes = False
    app.router.default = _SlashRedirect(app.router)
    return app


class _SlashRedirect:
    """The router's fallback: a 307 to the same path with the trailing slash added or removed when a route has
    that path, with a relative Location (path and query, never a host); else the router's 404."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        location = self._location(scope) if scope["type"] == "http" else None
        if location is None:
            await self.router.not_found(scope, receive, send)
            return
        headers = [(b"location", location.encode("ascii")), (b"content-length", b"0")]
        await send({"type": "http.response.start", "status": 307, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    def _location(self, scope: Scope) -> str | None:
        path: str = scope["path"]
        root = scope.get("root_path", "")
        route_path = path[len(root) :] if root and path.startswith(root) else path
        if route_path in ("", "/"):
            return None
        other = {**scope, "path": path.rstrip("/") if route_path.endswith("/") else path + "/"}
        target = other["path"]
        # A Location starting with // (or /\) would name another host; no route has such a path anyway.
        if not target.startswith("/") or target[1:2] in ("/", "\\"):
            return None
        if not any(route.matches(other)[0] is not Match.NONE for route in self.router.routes):
            return None
        query = scope.get("query_string", b"").decode("latin-1")
        relative = quote(target, safe="/:@!$&'()*+,;=")
        return f"{relative}?{quote(query, safe='=&;+%/:@!$()*,')}" if query else relative


# -- where a JSON body breaks ------------------------------------------------------------------------------------


def json_position(text: str, pos: int) -> tuple[int, int]:
    """1-based (line, column) of character `pos` of a text, counted as json and orjson count them (their
    JSONDecodeError.lineno and colno): a line ends at "\n", a column is a character (not a byte)."""
    pos = max(0, min(pos, len(text)))
    return text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)


def invalid_json(body: bytes | str, pos: int, reason: str) -> str:
    """The message for a JSON body a parser stopped in at character `pos` (JSONDecodeError.pos of json or orjson;
    the position in pydantic's json_invalid `loc`): `body: invalid JSON at line 3, column 14: Expecting ','
    delimiter`. `body` is the text the parser read, or its bytes (UTF-8, what both parsers read)."""
    text = body if isinstance(body, str) else body.decode("utf-8", "replace")  # the parser read up to pos as text
    line, column = json_position(text, pos)
    return f"body: invalid JSON at line {line}, column {column}: {reason}"


def undecodable_json(exc: UnicodeDecodeError) -> str:
    """The same message for a body that is not text in its encoding, at its first undecodable byte: `body:
    invalid JSON at line 1, column 8: not UTF-8 text: byte 0xff (invalid start byte)`. orjson says line 1,
    column 1 for any such byte; json raises the UnicodeDecodeError, without a position of its own."""
    data = bytes(exc.object)
    before = data[: exc.start].decode(exc.encoding, "replace")  # valid text up to the bad byte
    line, column = json_position(before, len(before))
    bad = data[exc.start : exc.end]
    what = f"byte{'s' if len(bad) > 1 else ''} {' '.join(f'0x{b:02x}' for b in bad)}"
    return f"body: invalid JSON at line {line}, column {column}: not {exc.encoding.upper()} text: {what} ({exc.reason})"

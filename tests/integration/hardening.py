"""Serving an app as `analytics collector` / `analytics api` do (uvicorn with server_options), and a raw slow client."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from fastapi import FastAPI

from analytics_core.serving import server_options
from analytics_core.settings import Settings
from tests.servers import serve


@contextmanager
def serve_like_production(app: FastAPI, settings: Settings, timeout: float = 30.0) -> Iterator[str]:
    """tests/servers.serve, with the uvicorn options the CLIs pass (head time and size limits, keep-alive)."""
    with serve(app, timeout, **server_options(settings)) as url:
        yield url


@contextmanager
def connect(url: str) -> Iterator[socket.socket]:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=10)
    try:
        yield sock
    finally:
        sock.close()


def trickle(url: str, first: bytes, drip: bytes, every_s: float, give_up_s: float) -> tuple[bytes, float]:
    """Send `first`, then `drip` one byte every `every_s`, until the server closes the connection.

    Returns what the server sent and the seconds from connecting until it closed; AssertionError when it is
    still open after `give_up_s` (the finding: slow clients held for ever).
    """
    with connect(url) as sock:
        started = time.monotonic()
        if first:
            sock.sendall(first)
        received, sent = b"", 0
        while time.monotonic() - started < give_up_s:
            readable, _, _ = select.select([sock], [], [], every_s)
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                if not data:
                    return received, time.monotonic() - started
                received += data
            elif sent < len(drip):
                try:
                    sock.sendall(drip[sent : sent + 1])
                    sent += 1
                except OSError:  # closed by the server; read what it sent before
                    pass
        raise AssertionError(f"connection still open after {give_up_s} s ({sent} bytes dripped); got {received!r}")


def read_response(sock: socket.socket) -> bytes:
    """One whole response with a Content-Length body from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return head + b"\r\n\r\n" + body

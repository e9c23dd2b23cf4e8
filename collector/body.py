"""Request bodies within limits: size checked before and after gzip, so a gzip bomb is refused cheaply."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

from analytics_core.serving import invalid_json, undecodable_json


class BodyError(ValueError):
    """A body the collector refuses whole; `status` is the HTTP answer (400 or 413)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_body(chunks: AsyncIterator[bytes], encoding: str | None, limit: int) -> bytes:
    """The request body, decompressed; BodyError(413) as soon as either size passes `limit`."""
    encoding = (encoding or "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise BodyError(400, f"Content-Encoding {encoding!r} is not supported: send identity or gzip")
    raw = bytearray()
    async for chunk in chunks:
        raw += chunk
        if len(raw) > limit:
            raise BodyError(413, f"request body is larger than the {limit} byte limit")
    if encoding == "identity":
        return bytes(raw)
    return gunzip(bytes(raw), limit)


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress at most `limit` bytes; a body that would inflate beyond it is refused, not expanded."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise BodyError(400, f"body is not valid gzip: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise BodyError(413, f"decompressed body is larger than the {limit} byte limit")
    if not inflater.eof:
        raise BodyError(400, "body is not valid gzip: truncated stream")
    return out


def parse_json(body: bytes) -> Any:
    """The JSON document of a body; invalid UTF-8 or JSON is a 400 with the parser's reason, and the line and
    column where the body breaks (the query API's message: analytics_core/serving.py, invalid_json)."""
    if not body:
        raise BodyError(400, "request body is empty: send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:  # orjson puts any byte that is not UTF-8 at line 1, column 1: find the real one
            body.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise BodyError(400, undecodable_json(bad)) from None
        raise BodyError(400, invalid_json(body, exc.pos, exc.msg)) from None

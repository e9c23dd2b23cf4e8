"""Body limits: sizes before and after gzip, bombs, broken gzip and JSON."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator

import pytest

from collector.body import BodyError, gunzip, parse_json, read_body


async def chunks_of(data: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def read(data: bytes, encoding: str | None, limit: int) -> bytes:
    return asyncio.run(read_body(chunks_of(data), encoding, limit))


def test_plain_and_gzip_bodies_come_back_identical() -> None:
    body = json.dumps({"batch": [{"type": "track", "event": "x"}] * 50}).encode()
    assert read(body, None, 10_000) == body
    assert read(gzip.compress(body), "gzip", 10_000) == body
    assert read(gzip.compress(body), " GZIP ", 10_000) == body


def test_oversized_plain_body_is_413() -> None:
    with pytest.raises(BodyError) as err:
        read(b"x" * 10_001, None, 10_000)
    assert err.value.status == 413


def test_gzip_bomb_is_refused_without_inflating_it() -> None:
    bomb = gzip.compress(b"\0" * 50_000_000)  # ~50 KB on the wire, 50 MB inflated
    assert len(bomb) < 100_000
    with pytest.raises(BodyError) as err:
        read(bomb, "gzip", 500_000)
    assert err.value.status == 413
    assert "decompressed" in str(err.value)


def test_exactly_at_the_limit_is_accepted() -> None:
    body = b"a" * 1000
    assert gunzip(gzip.compress(body), 1000) == body


@pytest.mark.parametrize(
    ("data", "encoding", "status", "words"),
    [
        (b"not gzip at all", "gzip", 400, "not valid gzip"),
        (gzip.compress(b'{"a": 1}')[:-6], "gzip", 400, "truncated"),
        (b"{}", "br", 400, "not supported"),
    ],
)
def test_broken_encodings_are_400(data: bytes, encoding: str, status: int, words: str) -> None:
    with pytest.raises(BodyError) as err:
        read(data, encoding, 10_000)
    assert err.value.status == status
    assert words in str(err.value)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "empty"),
        (b"{", "invalid JSON at line 1, column 2"),
        (b'{"a": "\xff"}', "invalid JSON at line 1, column 8: not UTF-8 text"),
        (b"[1,", "invalid JSON at line 1, column 4"),
    ],
)
def test_invalid_json_and_utf8_are_400(body: bytes, words: str) -> None:
    with pytest.raises(BodyError) as err:
        parse_json(body)
    assert err.value.status == 400
    assert words in str(err.value)

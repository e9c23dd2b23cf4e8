"""Where a JSON body breaks, as both services say it: line and column from 1, counted in characters.

The positions are checked against the parsers' own (json's and orjson's JSONDecodeError.lineno and colno): the
query API gets only json's character position (pydantic's json_invalid `loc`), the collector orjson's, and for
a body that is not UTF-8 neither parser says where the bad byte is.
"""

from __future__ import annotations

import json

import orjson
import pytest

from analytics_core.serving import invalid_json, json_position, undecodable_json
from collector.body import BodyError, parse_json

BROKEN = [
    b'{\n  "metrics": ["events"],\n  "start" "2026-11-01"\n}',  # line 3: a missing colon
    b'{"metrics": ["events"]\n,\n\n   "granularity": "hour" "x"}',
    '{\n  "timezone": "Europe/Zürich", "start": "2026-11-01 🙂" ]\n}'.encode(),  # non-ASCII before the error
    '{\n\n  "€": 1,\n  "é" 2}'.encode(),
    b'{"metrics": [',  # ends too soon
    b"[1,\r\n2,\r\n x]",  # \r is not a line end for the parsers
    b"\t\t{oops}",
    b'{"a": 1}\n\n  trailing',
    b"",
]


@pytest.mark.parametrize("body", BROKEN)
def test_line_and_column_are_the_parsers_own(body: bytes) -> None:
    with pytest.raises(json.JSONDecodeError) as std:
        json.loads(body)
    line, column = json_position(std.value.doc, std.value.pos)
    assert (line, column) == (std.value.lineno, std.value.colno)
    with pytest.raises(orjson.JSONDecodeError) as fast:
        orjson.loads(body)
    assert json_position(body.decode(), fast.value.pos) == (fast.value.lineno, fast.value.colno)
    message = invalid_json(body, std.value.pos, std.value.msg)
    assert message == f"body: invalid JSON at line {line}, column {column}: {std.value.msg}"
    assert invalid_json(std.value.doc, std.value.pos, std.value.msg) == message  # the text or its bytes


def test_the_example_of_the_report() -> None:
    body = b'{\n  "metrics": ["events"],\n  "start": "2026-11-01" "end": "2026-11-02"\n}'
    with pytest.raises(json.JSONDecodeError) as std:
        json.loads(body)
    assert invalid_json(body, std.value.pos, std.value.msg) == (
        "body: invalid JSON at line 3, column 25: Expecting ',' delimiter"
    )


def test_columns_count_characters_not_bytes() -> None:
    body = '{"ü🙂€": 1 x}'.encode()  # 2 + 4 + 3 bytes, 3 characters: x is byte 16, character 10
    with pytest.raises(json.JSONDecodeError) as std:
        json.loads(body)
    assert std.value.pos == 10
    assert json_position(body.decode(), std.value.pos) == (1, 11)
    assert invalid_json(body, std.value.pos, "x").startswith("body: invalid JSON at line 1, column 11: ")


def test_an_empty_body_breaks_at_line_1_column_1() -> None:
    assert json_position("", 0) == (1, 1)
    assert invalid_json(b"", 0, "Expecting value") == "body: invalid JSON at line 1, column 1: Expecting value"


def test_positions_past_either_end_are_clamped() -> None:
    assert json_position("ab\ncd", 99) == (2, 3)
    assert json_position("ab\ncd", -5) == (1, 1)


@pytest.mark.parametrize(
    ("body", "where", "what"),
    [
        (b'{"a": "\xff"}', (1, 8), "not UTF-8 text: byte 0xff (invalid start byte)"),
        (b'{\n  "metrics": ["\xc3\x28"]\n}', (2, 16), "not UTF-8 text: byte 0xc3 (invalid continuation byte)"),
        ('{\n "é🙂": 1,\n  "x": "'.encode() + b"\xe2\x82", (3, 9), "not UTF-8 text: bytes 0xe2 0x82 (unexpected end"),
        (b"\xff\xfe", (1, 1), "not UTF-8 text: byte 0xff (invalid start byte)"),
    ],
)
def test_a_body_that_is_not_utf8_names_its_first_bad_byte(body: bytes, where: tuple[int, int], what: str) -> None:
    with pytest.raises(UnicodeDecodeError) as bad:
        body.decode("utf-8")
    message = undecodable_json(bad.value)
    assert message.startswith(f"body: invalid JSON at line {where[0]}, column {where[1]}: {what}"), message
    with pytest.raises(BodyError) as refused:  # the collector: orjson would say line 1, column 1
        parse_json(body)
    assert refused.value.status == 400
    assert str(refused.value) == message


def test_json_reads_utf16_and_the_position_follows_its_encoding() -> None:
    """json.loads reads UTF-16 too (by its first bytes): a bad byte there is counted in UTF-16 characters."""
    body = '{\n"a": "é'.encode("utf-16-le") + b"\x00"  # half a UTF-16 unit at the end
    with pytest.raises(UnicodeDecodeError) as bad:
        json.loads(body)
    assert undecodable_json(bad.value) == (
        "body: invalid JSON at line 2, column 8: not UTF-16-LE text: byte 0x00 (truncated data)"
    )


@pytest.mark.parametrize("body", [b for b in BROKEN if b])
def test_the_collector_names_line_and_column(body: bytes) -> None:
    with pytest.raises(orjson.JSONDecodeError) as fast:
        orjson.loads(body)
    with pytest.raises(BodyError) as refused:
        parse_json(body)
    assert refused.value.status == 400
    assert str(refused.value) == (
        f"body: invalid JSON at line {fast.value.lineno}, column {fast.value.colno}: {fast.value.msg}"
    )


def test_the_collector_still_says_an_empty_body_is_empty() -> None:
    with pytest.raises(BodyError, match="empty"):
        parse_json(b"")

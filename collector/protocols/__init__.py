"""Other vendors' tracking protocols: Mixpanel, Amplitude and Snowplow, each in a module of its own.

A protocol module holds a decoder (its body, as the vendor's SDKs send it, into a document), an adapter (that
document into Segment-shaped messages and the write key, as collector/adapters.py does for Segment and PostHog)
and its answers; collector/routes/ plugs them into `handle()` with a `Wire`, so every message goes through the
same authentication, limits, validation, enrichment, dedupe and dead letters as a Segment message. Here: what
two or more of them share (epoch times, base64 JSON, profile operations, the pixel).
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson
from fastapi import Request

from collector.adapters import PayloadError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Epoch numbers at or above this are milliseconds (1e11 seconds is the year 5138; 1e11 ms is March 1973).
MILLIS_FROM = 100_000_000_000
# The 1x1 transparent GIF a tracking pixel answers with.
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


def text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def number(value: Any) -> float | None:
    """A JSON number or numeric text (trackers send both) as a float; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def epoch_time(value: Any, unit: str = "auto") -> Any:
    """ISO-8601 text of an epoch time in seconds or milliseconds (`unit` "s", "ms", or "auto": by its size).

    Anything that is not such a number is returned as it is, so the pipeline dead-letters it with its rule
    (`timestamp: must be an ISO-8601 string`) and the original value stays in the dead letter's payload.
    """
    amount = number(value)
    if amount is None or not math.isfinite(amount):
        return value
    millis = amount if unit == "ms" or (unit == "auto" and abs(amount) >= MILLIS_FROM) else amount * 1000
    try:
        # Whole milliseconds in integers, the rest in microseconds: no float rounding of the usual ms values.
        whole = math.floor(millis)
        return (EPOCH + timedelta(milliseconds=whole, microseconds=round((millis - whole) * 1000))).isoformat()
    except OverflowError:
        return value


def base64_json(encoded: str) -> Any:
    """The JSON document in base64 text, standard or URL-safe, padded or not; ValueError when it is not one."""
    cleaned = encoded.strip().replace(" ", "+").replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
        return orjson.loads(raw)
    except (binascii.Error, orjson.JSONDecodeError) as exc:
        raise ValueError(str(exc)) from None


def profile_traits(update: dict[str, Any], set_ops: tuple[str, ...], other_ops: tuple[str, ...]) -> dict[str, Any]:
    """Traits of a profile update: the set operations merged (a later one wins: list "set once" first), every
    other operation kept whole under its own name (`{"$add": {"visits": 1}}`): nothing sent is lost."""
    traits: dict[str, Any] = {}
    for op in set_ops:
        values = update.get(op)
        if isinstance(values, dict):
            traits.update(values)
    for op in other_ops:
        if op in update:
            traits[op] = update[op]
    return traits


def one_key(keys: Iterable[Any], field: str) -> str | None:
    """The key every item of a request names (items without one are fine), or None; PayloadError when they name
    different keys: each key is a tenant, and one request is taken for one tenant."""
    found = {key for key in keys if isinstance(key, str) and key}
    if len(found) > 1:
        raise PayloadError(
            field, f"the events of one request name {len(found)} different keys: send each key's events on their own"
        )
    return found.pop() if found else None


def has_basic_auth(request: Request) -> bool:
    """The request carries Basic auth, whose user name is the write key (it wins over any key in the body)."""
    return request.headers.get("authorization", "")[:6].lower() == "basic "


def library(name: Any, version: Any) -> dict[str, Any] | None:
    return {"name": name, "version": version if isinstance(version, str) else ""} if text(name) else None


def split_library(value: Any) -> dict[str, Any] | None:
    """`name/version` (Amplitude's `library`) as context.library."""
    if not text(value):
        return None
    name, _, version = value.partition("/")
    return library(name, version)


def url_path(url: Any) -> str | None:
    """The path of a URL, or None (an unparseable URL, e.g. an unclosed IPv6 bracket, is not worth a dead letter)."""
    if not text(url):
        return None
    try:
        return urlsplit(url).path or None
    except ValueError:
        return None


def now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)

"""Canonical events ↔ Segment tracking API messages (the /v1/batch body the collector accepts)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import orjson

from analytics_core.events import FIELD_NAMES, to_micros

BATCH_LIMIT = 100  # messages per /v1/batch request


def iso(us: int) -> str:
    """ISO 8601 UTC text with microseconds, e.g. 2024-01-01T12:00:00.000001Z."""
    seconds, micros = divmod(us, 1_000_000)
    t = time.gmtime(seconds)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{micros:06d}Z"


def parse_iso(text: str) -> int:
    return to_micros(datetime.fromisoformat(text))


def to_segment(event: dict[str, Any], client_clock: bool) -> dict[str, Any]:
    """The track message an SDK would have sent for `event`.

    With `client_clock` the message carries the device's own timestamp and sentAt, which the
    collector corrects for skew; without it (backfill) it carries the true event time and no
    sentAt, so the batch-level sentAt (the real send time) leaves the historical time unchanged.
    """
    name, _, version = (event["library"] or "/").partition("/")
    msg: dict[str, Any] = {"type": event["message_type"], "messageId": event["event_id"]}
    if event["event_type"] is not None:
        msg["event"] = event["event_type"]
    if event["user_id"] is not None:
        msg["userId"] = event["user_id"]
    if event["anonymous_id"] is not None:
        msg["anonymousId"] = event["anonymous_id"]
    msg["timestamp"] = iso(event["original_timestamp"] if client_clock else event["timestamp"])
    if client_clock and event["sent_at"] is not None:
        msg["sentAt"] = iso(event["sent_at"])
    msg["properties"] = orjson.loads(event["properties"])
    msg["context"] = {
        "ip": event["ip"],
        "userAgent": event["user_agent"],
        "library": {"name": name, "version": version},
        "page": {"path": event["page"]},
    }
    return msg


def batch_body(messages: list[dict[str, Any]], sent_at_us: int) -> bytes:
    return orjson.dumps({"batch": messages, "sentAt": iso(sent_at_us)})


def from_segment(
    msg: dict[str, Any], tenant_id: str, received_at: int, batch_sent_at: str | None = None
) -> dict[str, Any]:
    """Canonical event of a track message as a collector would build it, before IP/user-agent enrichment.

    Event time is corrected for client clock skew: receivedAt - (sentAt - timestamp).
    """
    props = msg.get("properties") or {}
    context = msg.get("context") or {}
    library = context.get("library") or {}
    original = parse_iso(msg["timestamp"]) if msg.get("timestamp") else None
    sent_text = msg.get("sentAt") or batch_sent_at
    sent = parse_iso(sent_text) if sent_text else None
    timestamp = received_at if original is None else original if sent is None else received_at - (sent - original)
    revenue = props.get("revenue")
    event: dict[str, Any] = dict.fromkeys(FIELD_NAMES)
    event.update(
        event_id=msg.get("messageId"),
        tenant_id=tenant_id,
        message_type=msg.get("type"),
        event_type=msg.get("event"),
        user_id=msg.get("userId"),
        anonymous_id=msg.get("anonymousId"),
        timestamp=timestamp,
        original_timestamp=original,
        sent_at=sent,
        received_at=received_at,
        properties=orjson.dumps(props).decode(),
        page=(context.get("page") or {}).get("path"),
        revenue=float(revenue) if isinstance(revenue, int | float) and not isinstance(revenue, bool) else None,
        currency=props.get("currency"),
        experiment_key=props.get("experiment_key"),
        experiment_variant=props.get("experiment_variant"),
        ip=context.get("ip"),
        user_agent=context.get("userAgent"),
        library=f"{library['name']}/{library.get('version', '')}" if library.get("name") else None,
        is_bot=False,
    )
    return event

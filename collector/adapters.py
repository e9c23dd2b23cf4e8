"""Protocol adapters: Segment (/v1/batch, /v1/<type>) and PostHog (/batch/, /e/ …) bodies → Segment-shaped messages.

Adapters only reshape; every rule about a message is checked later, so one bad message never fails a
request. A message the adapter had to change is a shallow copy carrying private keys (below) that the
pipeline reads: the original as received (for dead letters and dedupe ids), the batch-level sentAt,
and a PostHog feature-flag experiment.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import orjson

from collector.validation import MESSAGE_TYPES

ORIGINAL = "_original"
BATCH_SENT_AT = "_batchSentAt"
EXPERIMENT = "_experiment"
PRIVATE_KEYS = frozenset({ORIGINAL, BATCH_SENT_AT, EXPERIMENT})
_POSTHOG_TYPES = {"$pageview": "page", "$screen": "screen", "$identify": "identify"}
_FEATURE_PREFIX = "$feature/"


class PayloadError(ValueError):
    """A request body no message can be taken from; the app answers 400 with str(err)."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


def _body(body: Any, list_key: str) -> list[Any]:
    if not isinstance(body, dict):
        raise PayloadError("body", "must be a JSON object")
    items = body.get(list_key)
    if items is None:
        raise PayloadError(list_key, "is required")
    if not isinstance(items, list):
        raise PayloadError(list_key, "must be a list")
    return items


def _check_text(value: Any, field: str) -> None:
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        raise PayloadError(field, f"is not valid JSON text ({exc})") from exc


def _key(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    return value if isinstance(value, str) and value else None


def _segment_message(msg: Any, extra: dict[str, Any]) -> Any:
    """`msg` as is, or a copy with `extra` and the original when it needs either (or spoofs a private key)."""
    if not isinstance(msg, dict) or (not extra and PRIVATE_KEYS.isdisjoint(msg)):
        return msg
    out = {k: v for k, v in msg.items() if k not in PRIVATE_KEYS}
    out.update(extra)
    out[ORIGINAL] = msg
    return out


def segment_batch(body: Any) -> tuple[list[Any], str | None]:
    """/v1/batch body → (messages, writeKey from the body or None); batch sentAt/context go into each message."""
    batch = _body(body, "batch")
    sent_at = body.get("sentAt")
    context = body.get("context")
    if isinstance(context, dict) and context:
        _check_text(context, "context")  # merged into every message, after their own checks
    batch_context = context if isinstance(context, dict) and context else None
    out = []
    for msg in batch:
        if not isinstance(msg, dict):
            out.append(msg)
            continue
        extra: dict[str, Any] = {}
        if sent_at is not None and msg.get("sentAt") is None:
            extra[BATCH_SENT_AT] = sent_at
        if batch_context is not None:
            own = msg.get("context")
            # Segment: batch-level context applies to every message; the message's own keys win.
            extra["context"] = {**context, **own} if isinstance(own, dict) else own if own is not None else context
        # The usual message needs no copy: _segment_message's own test, inline.
        out.append(msg if not extra and PRIVATE_KEYS.isdisjoint(msg) else _segment_message(msg, extra))
    return out, _key(body, "writeKey")


def segment_single(message_type: str, body: Any) -> tuple[list[Any], str | None]:
    """/v1/track, /v1/page … body → ([message], writeKey or None); the type comes from the path when missing."""
    if message_type not in MESSAGE_TYPES:
        raise PayloadError("type", f"must be one of {', '.join(MESSAGE_TYPES)}")
    if not isinstance(body, dict):
        raise PayloadError("body", "must be a JSON object")
    extra = {"type": message_type} if body.get("type") is None else {}
    return [_segment_message(body, extra)], _key(body, "writeKey")


def posthog_batch(body: Any) -> tuple[list[Any], str | None]:
    """PostHog /batch/ body → (messages in Segment shape, api_key or None)."""
    batch = _body(body, "batch")
    sent_at = body.get("sent_at")
    return [_posthog_message(e, sent_at) if isinstance(e, dict) else e for e in batch], _key(body, "api_key")


def posthog_capture(body: Any) -> tuple[list[Any], str | None]:
    """Any capture body of a PostHog SDK (/e/, /i/v0/e/, /capture/, /track/, /batch/) → (messages, key or None).

    The body is `{"batch": [...], "api_key"}`, a list of events, or one event; the key is the body's `api_key` or
    `token`, else the first event's (`api_key`, `token`, or `properties.token`, where posthog-js puts it)."""
    if isinstance(body, dict) and "batch" in body:
        messages, key = posthog_batch(body)
        return messages, key or _key(body, "token") or _event_token(body["batch"])
    if isinstance(body, dict):
        return [_posthog_message(body, None)], _key(body, "api_key") or _event_token([body])
    if isinstance(body, list):
        return [_posthog_message(e, None) if isinstance(e, dict) else e for e in body], _event_token(body)
    raise PayloadError("body", "must be a JSON object (an event or a batch) or a list of events")


def _event_token(events: list[Any]) -> str | None:
    for event in events:
        if isinstance(event, dict):
            props = event.get("properties")
            key = _key(event, "api_key") or _key(event, "token") or _key(_object(props), "token")
            if key:
                return key
    return None


def _posthog_message(event: dict[str, Any], sent_at: Any) -> dict[str, Any]:
    props = event.get("properties")
    p = props if isinstance(props, dict) else {}
    name = event.get("event")
    mtype = _POSTHOG_TYPES.get(name, "track") if isinstance(name, str) else "track"
    msg: dict[str, Any] = {"type": mtype, ORIGINAL: event}
    if mtype == "track":
        msg["event"] = name
    elif mtype == "screen":
        msg["name"] = p.get("$screen_name")
    elif mtype == "identify":
        # posthog-js sends the person's properties as the event's own $set; other SDKs inside properties.
        traits = {**_object(p.get("$set")), **_object(event.get("$set"))}
        if traits:
            msg["traits"] = traits
        if p.get("$anon_distinct_id") is not None:
            msg["anonymousId"] = p["$anon_distinct_id"]
    user = event.get("distinct_id")
    if user is None:
        user = p.get("distinct_id")  # posthog-js: the user is a property
    if user is not None:
        # posthog-js' id before identify() is the device's: Segment's anonymousId, as analytics.js has it.
        msg["anonymousId" if p.get("$is_identified") is False and mtype != "identify" else "userId"] = user
    for src, dst in (("uuid", "messageId"), ("timestamp", "timestamp")):
        if event.get(src) is not None:
            msg[dst] = event[src]
    if props is not None:
        msg["properties"] = props
    if sent_at is not None:
        msg[BATCH_SENT_AT] = sent_at
    msg["context"] = _posthog_context(p)
    for key, value in p.items():
        # Multivariate flags ($feature/<flag>: "<variant>") are PostHog's experiments; boolean flags are not.
        if isinstance(value, str) and key.startswith(_FEATURE_PREFIX):
            msg[EXPERIMENT] = (key[len(_FEATURE_PREFIX) :], value)
            break
    return msg


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _posthog_context(p: dict[str, Any]) -> dict[str, Any]:
    context: dict[str, Any] = {}
    if p.get("$ip") is not None:
        context["ip"] = p["$ip"]
    agent = p.get("$raw_user_agent") or p.get("$useragent")
    if agent is not None:
        context["userAgent"] = agent
    if p.get("$lib") is not None:
        context["library"] = {"name": p["$lib"], "version": p.get("$lib_version", "")}
    path, url = p.get("$pathname"), p.get("$current_url")
    if path is None and isinstance(url, str):
        try:
            path = urlsplit(url).path or None
        except ValueError:
            path = None
    if path is not None:
        context["page"] = {"path": path}
    return context

"""The collector's OpenAPI: the request bodies, auth, answers and media types the handlers really have.

The ingest handlers read the raw body themselves (no FastAPI body model: parsing into models would cost more than
the whole pipeline), so FastAPI alone documents no body. Here the document is written out: `ingest_operation()`
is each ingest route's `openapi_extra`, and `install(app)` adds the shared schemas and the security scheme. Nothing
of this runs per request.

The request schemas say exactly what the HTTP layer accepts, no more and no less, because a fuzzer holds the
service to them: a body that is a JSON object with a `batch` list (a single message: any JSON object) is accepted
(200) whatever its messages hold, since every message is checked on its own and a bad one is dead-lettered with
its reason, never bounced. So message fields are described (names, meaning, examples) but not constrained.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from collector.validation import MESSAGE_TYPES

SCHEMES = "#/components/schemas/"
SECURITY_SCHEME = "writeKeyBasic"
RETRY_AFTER = {
    "description": "Seconds to wait before sending the same request again.",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}
ENCODINGS = ("identity", "gzip")  # Content-Encoding values read (case-insensitive); anything else is a 400

_TEXT = {"description": "Text; an integer is taken as its decimal text."}
_TIME = {"description": "ISO-8601 time, e.g. 2026-01-15T10:00:00.123Z."}
_OBJECT = {"description": "A JSON object (null counts as empty)."}
_MESSAGE_FIELDS: dict[str, dict[str, Any]] = {
    "type": {
        "description": f"One of {', '.join(MESSAGE_TYPES)}. On /v1/<type> the path gives it when it is missing.",
        "examples": ["track"],
    },
    "event": {
        "description": "The event name, required for track messages (at most 200 characters).",
        "examples": ["Order Completed"],
    },
    "userId": {**_TEXT, "examples": ["user-1"]},
    "anonymousId": {**_TEXT, "description": "Text; userId or anonymousId is required."},
    "messageId": {
        **_TEXT,
        "description": "The event id. A resend with the same id inside the dedupe window is "
        "dropped; without one the id is derived from the tenant and the message's content.",
    },
    "timestamp": {**_TIME, "description": "When the event happened (client clock), ISO-8601."},
    "originalTimestamp": _TIME,
    "sentAt": {**_TIME, "description": "When the SDK sent it, ISO-8601; corrects the client clock's skew."},
    "properties": {**_OBJECT, "examples": [{"revenue": 42.5, "currency": "EUR"}]},
    "traits": _OBJECT,
    "context": {**_OBJECT, "description": "A JSON object: ip, userAgent, library, page, … (null counts as empty)."},
    "name": {"description": "Page or screen name."},
    "groupId": {**_TEXT, "description": "Required for group messages."},
    "previousId": {**_TEXT, "description": "Required for alias messages."},
}
_DEAD_LETTERS = (
    "Any JSON value is accepted here: each message is checked on its own (docs/COLLECTOR.md), one that breaks a "
    "rule is dead-lettered to tracking.events_dlq with its reason, the others are kept, and the request answers "
    "200 either way."
)

SCHEMAS: dict[str, dict[str, Any]] = {
    "SegmentMessage": {
        "title": "SegmentMessage",
        "description": f"One Segment message (track, page, screen, identify, group, alias). {_DEAD_LETTERS}",
        "properties": _MESSAGE_FIELDS,
    },
    "SegmentSingleMessage": {
        "title": "SegmentSingleMessage",
        "type": "object",
        "description": (
            "One Segment message, as a JSON object (anything else is a 400). Its fields are checked like a batch's "
            "messages: a message that breaks a rule is dead-lettered and the request still answers 200."
        ),
        "properties": {**_MESSAGE_FIELDS, "writeKey": {"description": "The write key, when not sent as Basic auth."}},
    },
    "SegmentBatch": {
        "title": "SegmentBatch",
        "type": "object",
        "required": ["batch"],
        "properties": {
            "batch": {"type": "array", "items": {"$ref": SCHEMES + "SegmentMessage"}, "description": "The messages."},
            "sentAt": {"description": "ISO-8601; the sentAt of every message that has none of its own."},
            "context": {"description": "A JSON object merged under each message's context (the message's keys win)."},
            "writeKey": {"description": "The write key, when not sent as Basic auth (a non-empty string)."},
        },
    },
    "PostHogEvent": {
        "title": "PostHogEvent",
        "description": (
            "One PostHog event, taken as a Segment message: $pageview → page, $screen → screen, $identify → "
            f"identify, any other event name → track. {_DEAD_LETTERS}"
        ),
        "properties": {
            "event": {"description": "The event name.", "examples": ["$pageview"]},
            "distinct_id": {**_TEXT, "description": "The user (Segment's userId).", "examples": ["user-1"]},
            "uuid": {**_TEXT, "description": "The event id (Segment's messageId)."},
            "timestamp": _TIME,
            "properties": {
                **_OBJECT,
                "description": "A JSON object; $ip, $raw_user_agent/$useragent, $lib, $lib_version, $pathname, "
                "$current_url, $screen_name, $set and $feature/<flag> are read as docs/COLLECTOR.md says.",
            },
        },
    },
    "PostHogBatch": {
        "title": "PostHogBatch",
        "type": "object",
        "required": ["batch"],
        "properties": {
            "api_key": {"description": "The write key, when not sent as Basic auth (a non-empty string)."},
            "batch": {"type": "array", "items": {"$ref": SCHEMES + "PostHogEvent"}, "description": "The events."},
            "sent_at": {"description": "ISO-8601; when the SDK sent the batch."},
        },
    },
    "Accepted": {
        "title": "Accepted",
        "description": "The batch is in Kafka (its invalid messages as dead letters, its resends dropped).",
        "type": "object",
        "required": ["code", "status", "error", "results"],
        "properties": {
            "code": {"const": 200},
            "status": {"const": 1},
            "error": {"type": "null"},
            "results": {"type": "object", "maxProperties": 0},
        },
        "additionalProperties": False,
    },
}
SECURITY_SCHEMES = {
    SECURITY_SCHEME: {
        "type": "http",
        "scheme": "basic",
        "description": (
            "The tenant's write key as the Basic-auth user name, no password (Segment and RudderStack SDKs). "
            "It may instead be sent in the body (writeKey, PostHog's api_key); Basic auth wins when both are sent."
        ),
    }
}

_REQUEST_NOTES = (
    " The body is JSON, as is or gzip-compressed (Content-Encoding: gzip; identity or none: as is; any other "
    "encoding is a 400); its Content-Type is not checked (analytics.js sends text/plain). At most "
    "ANALYTICS_COLLECTOR_MAX_BATCH_BYTES (500 KB), before and after decompression."
)


def _error(status: int, description: str, retry_after: bool = False) -> dict[str, Any]:
    schema = {
        "type": "object",
        "required": ["code", "status", "error", "results"],
        "properties": {
            "code": {"const": status},
            "status": {"const": 0},
            "error": {"type": "string", "description": "What was wrong and what to do."},
            "results": {"type": "object", "maxProperties": 0},
        },
        "additionalProperties": False,
    }
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if retry_after:
        response["headers"] = {"Retry-After": RETRY_AFTER}
    return response


INGEST_RESPONSES: dict[str, dict[str, Any]] = {
    "200": {
        "description": "Accepted: every message is in Kafka, as an event or a dead letter, or was a resend.",
        "content": {"application/json": {"schema": {"$ref": SCHEMES + "Accepted"}}},
    },
    "400": _error(
        400,
        "The body is empty, not JSON (or not UTF-8), not valid gzip, not a JSON object or has no `batch` list; or "
        "its Content-Encoding is neither identity nor gzip; or the batch context cannot be re-encoded as JSON.",
    ),
    "401": _error(
        401,
        "No write key (Basic-auth user, writeKey or api_key), an unknown one, or an Authorization "
        "header that is not valid Basic auth.",
    ),
    "403": _error(
        403,
        "A browser page's Origin that the write key's tenant does not allow (its allowed_origins, "
        "docs/TENANTS.md): nothing is kept.",
    ),
    "408": _error(
        408,
        "The body did not arrive whole within ANALYTICS_HTTP_BODY_TIMEOUT_S (30 s) of the request's head; "
        "the connection is closed.",
    ),
    "413": _error(
        413,
        "The body is larger than ANALYTICS_COLLECTOR_MAX_BATCH_BYTES, before or after gzip; or the batch holds "
        "more events than the tenant's burst (its events_per_second_limit), so it could never pass its rate "
        "limit: split it.",
    ),
    "429": _error(
        429,
        "The tenant is over its events_per_second_limit (the whole request is refused; send it again after "
        "Retry-After), or this client address sent too many unknown write keys and is blocked for a while.",
        retry_after=True,
    ),
    "503": _error(
        503,
        "Kafka did not acknowledge the batch within ANALYTICS_COLLECTOR_KAFKA_TIMEOUT_S; nothing of it is kept as "
        "sent (a retry is not taken for a resend): send it again after Retry-After.",
        retry_after=True,
    ),
}


def ingest_operation(schema: str, description: str, example: dict[str, Any]) -> dict[str, Any]:
    """The `openapi_extra` of an ingest route whose body has components schema `schema`."""
    return {
        "description": description + _REQUEST_NOTES,
        "security": [{SECURITY_SCHEME: []}, {}],
        "x-content-encodings": list(ENCODINGS),
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": SCHEMES + schema}, "example": example}},
        },
        "responses": INGEST_RESPONSES,
    }


SEGMENT_EXAMPLE_MESSAGE = {
    "type": "track",
    "event": "Order Completed",
    "userId": "user-1",
    "messageId": "example-order-1",
    "timestamp": "2026-01-15T10:00:00Z",
    "properties": {"revenue": 42.5, "currency": "EUR"},
}
SEGMENT_BATCH = ingest_operation(
    "SegmentBatch",
    "A batch of Segment messages (the analytics-* SDKs' /v1/batch).",
    {"batch": [SEGMENT_EXAMPLE_MESSAGE], "sentAt": "2026-01-15T10:00:01Z"},
)


def single_operation(message_type: str) -> dict[str, Any]:
    example = {k: v for k, v in SEGMENT_EXAMPLE_MESSAGE.items() if k not in ("type", "event")}
    if message_type == "track":
        example["event"] = "Order Completed"
    return ingest_operation(
        "SegmentSingleMessage", f"One Segment {message_type} message (/v1/{message_type}).", example
    )


def segment_import(path: str) -> dict[str, Any]:
    """/v1/import and /v1/import/: a Segment batch, where analytics-java and analytics-ruby send it."""
    sdk = "analytics-java (endpoint(...) appends /v1/import/)" if path.endswith("/") else "analytics-ruby"
    return ingest_operation(
        "SegmentBatch",
        f"A batch of Segment messages, as on /v1/batch, at the path {sdk} posts to. analytics-java sends the write "
        "key as writeKey in the body, without Basic auth. Both spellings answer directly, without a redirect.",
        {"batch": [SEGMENT_EXAMPLE_MESSAGE], "sentAt": "2026-01-15T10:00:01Z", "writeKey": "wk_example"},
    )


READYZ_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Kafka answers: events can be accepted.",
        "content": {
            "application/json": {
                "schema": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ready"}}}
            }
        },
    },
    503: {
        "description": "Kafka does not answer; `kafka` says why.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["status", "kafka"],
                    "properties": {"status": {"const": "unavailable"}, "kafka": {"type": "string"}},
                }
            }
        },
    },
}
METRICS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Prometheus text exposition.", "content": {"text/plain": {"schema": {"type": "string"}}}}
}


def install(app: FastAPI) -> None:
    """Make app.openapi() add the shared schemas and the write-key security scheme to FastAPI's document."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()  # FastAPI's own, which it keeps in app.openapi_schema and serves from there
            components = document.setdefault("components", {})
            components.setdefault("schemas", {}).update(SCHEMAS)
            components["securitySchemes"] = SECURITY_SCHEMES
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend its document

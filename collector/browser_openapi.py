"""The OpenAPI operations of the browser SDKs' routes (collector/routes/browser.py and posthog.py), written out
like collector/openapi.py's: exactly what the HTTP layer accepts and answers, since a fuzzer holds it to them.

Only the JSON form of each body is described as a request body: PostHog's other encodings (gzip without a
Content-Encoding, `data=<base64>` forms) are told in the descriptions (`x-posthog-encodings`), because a schema
for them could not say which of their texts decode.
"""

from __future__ import annotations

from typing import Any

from collector import openapi

SCHEMES = openapi.SCHEMES
_BROWSER_NOTES = (
    " Browsers may send it cross-origin (CORS: preflights answered, every answer readable by the page); a page "
    "whose Origin the write key's tenant does not allow (its allowed_origins) gets 403."
)
_BLOCKED = openapi.INGEST_RESPONSES["429"]
_FORBIDDEN = openapi.INGEST_RESPONSES["403"]
_SHORT_EXAMPLE = {k: v for k, v in openapi.SEGMENT_EXAMPLE_MESSAGE.items() if k != "type"}


def short_operation(message_type: str) -> dict[str, Any]:
    """/t, /p, /i, /g, /a, /s: one message as analytics-next posts it (writeKey in the body and as Basic auth)."""
    example = {**_SHORT_EXAMPLE, "writeKey": "wk_..."} if message_type == "track" else {"userId": "user-1"}
    description = f"One {message_type} message from analytics.js (/{message_type[0]}); the path gives its type."
    return openapi.ingest_operation("SegmentSingleMessage", description + _BROWSER_NOTES, example)


SHORT_BATCH = openapi.ingest_operation(
    "SegmentBatch",
    "A batch from analytics.js' batching delivery strategy (/b): `{batch, writeKey, sentAt}`." + _BROWSER_NOTES,
    {"batch": [openapi.SEGMENT_EXAMPLE_MESSAGE], "writeKey": "wk_...", "sentAt": "2026-01-15T10:00:01Z"},
)

_CAPTURE = openapi.ingest_operation(
    "PostHogBatch",
    "PostHog events: a batch `{api_key, batch, sent_at}` (posthog-js, the server SDKs), a list of events, or one "
    "event. The write key is Basic auth, else the body's `api_key` or `token`, else the first event's `api_key`, "
    "`token` or `properties.token`. Besides JSON, the body may be gzip (with or without `?compression=gzip-js`: "
    "recognised by its bytes; Content-Encoding: gzip works too) or a form `data=<JSON, or base64 of it>` "
    "(`compression=base64` in the query or the form); `compression=lz64` and other values are a 400." + _BROWSER_NOTES,
    {
        "api_key": "wk_...",
        "batch": [
            {
                "event": "$pageview",
                "uuid": "0190f2a4-4f7e-7c1d-9a3b-2f6f1f3c5e01",
                "timestamp": "2026-01-15T10:00:00Z",
                "properties": {"distinct_id": "user-1", "$current_url": "https://shop.example/cart"},
            }
        ],
        "sent_at": "2026-01-15T10:00:01Z",
    },
)
POSTHOG_CAPTURE: dict[str, Any] = {
    **_CAPTURE,
    "x-posthog-encodings": ["json", "gzip", "form data=<json>", "form data=<base64 json>"],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        {"$ref": SCHEMES + "PostHogBatch"},
                        {"type": "array", "items": {"$ref": SCHEMES + "PostHogEvent"}, "description": "Events."},
                        {
                            "type": "object",
                            "not": {"required": ["batch"]},
                            "description": "One event (a JSON object without `batch`), fields as PostHogEvent's.",
                        },
                    ]
                },
                "example": _CAPTURE["requestBody"]["content"]["application/json"]["example"],
            }
        },
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_SETTINGS_SCHEMA = {
    "type": "object",
    "required": ["integrations"],
    "properties": {
        "integrations": {
            "type": "object",
            "required": ["Segment.io"],
            "properties": {
                "Segment.io": {
                    "type": "object",
                    "required": ["apiKey", "apiHost", "protocol"],
                    "properties": {
                        "apiKey": {"type": "string", "description": "The write key."},
                        "apiHost": {"type": "string", "description": "This collector, host[:port] (no /v1)."},
                        "protocol": {"enum": ["http", "https"]},
                    },
                }
            },
        },
        "metrics": {"type": "object", "description": "analytics.js' own metrics: off (sampleRate 0)."},
    },
}


def _path_key(name: str, description: str) -> list[dict[str, Any]]:
    return [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": description}]


SEGMENT_SETTINGS: dict[str, Any] = {
    "description": "What cdn.segment.com serves analytics.js for a write key, pointing it here: "
    "`integrations['Segment.io']` has the key as apiKey, this collector's host[:port] (from the Host header) as "
    "apiHost, and the scheme the request came with (X-Forwarded-Proto from a trusted proxy) as protocol; no "
    "destinations, no middleware. Set the snippet's CDN (`analytics._cdn`, or AnalyticsBrowser.load's `cdnURL`) "
    "to this collector." + _BROWSER_NOTES,
    "parameters": _path_key("write_key", "The tenant's write key, as the snippet has it."),
    "responses": {
        "200": _json(_SETTINGS_SCHEMA, "The settings; analytics.js then posts to /t, /p, /i, /g, /a, /s (or /b)."),
        "400": openapi._error(400, "The Host header is not host[:port], so the settings could not name this host."),
        "403": _FORBIDDEN,
        "404": openapi._error(404, "No tenant has this write key (analytics.js logs this message, sends nothing)."),
        "429": _BLOCKED,
    },
}

_FLAGS_SCHEMA = {
    "type": "object",
    "required": ["flags", "featureFlags", "supportedCompression", "sessionRecording", "config"],
    "properties": {
        "flags": {"type": "object", "maxProperties": 0},
        "featureFlags": {"type": "object", "maxProperties": 0},
        "featureFlagPayloads": {"type": "object", "maxProperties": 0},
        "supportedCompression": {"type": "array", "items": {"type": "string"}},
        "sessionRecording": {"const": False},
        "config": {"type": "object", "properties": {"enable_collect_everything": {"type": "boolean"}}},
    },
}
_TOKEN_BODY = {
    "type": "object",
    "description": "What posthog-js sends (gzip, base64 forms and JSON, as on the capture paths): a JSON object, "
    "of which only `token` (or `api_key`) is read; anything else is a 400.",
    "properties": {
        "token": {"description": "The project token: the tenant's write key."},
        "distinct_id": {"description": "Not read: no flags are evaluated."},
    },
}
_FLAGS_RESPONSES: dict[str, dict[str, Any]] = {
    "200": _json(_FLAGS_SCHEMA, "No feature flags, and the config posthog-js needs to send events here."),
    "400": openapi._error(400, "The body could not be decoded (see the capture paths)."),
    "401": openapi._error(401, "No project token (Basic auth, `token`/`api_key`), or an unknown one."),
    "403": _FORBIDDEN,
    "429": _BLOCKED,
}


def posthog_flags_operation(method: str) -> dict[str, Any]:
    """/decide/ (older posthog-js) and /flags/ (newer), any `?v=`: POST with the token in the body (older releases:
    GET), or as Basic auth or `?token=`."""
    token = {"name": "token", "in": "query", "required": False, "schema": {"type": "string"}}
    operation: dict[str, Any] = {
        "description": "posthog-js asks for feature flags (and, before /flags/, its config) here. The answer has no "
        "flags, turns session recording off and lists the compressions the capture paths read." + _BROWSER_NOTES,
        "security": [{openapi.SECURITY_SCHEME: []}, {}],
        "parameters": [{**token, "description": "The project token (the tenant's write key), when not in the body."}],
        "responses": _FLAGS_RESPONSES,
    }
    if method == "POST":
        operation["requestBody"] = {"required": False, "content": {"application/json": {"schema": _TOKEN_BODY}}}
    else:
        operation["responses"] = {status: r for status, r in _FLAGS_RESPONSES.items() if status != "400"}
    return operation


POSTHOG_CONFIG: dict[str, Any] = {
    "description": "posthog-js loads this first (`/array/<token>/config`): gzip the events, no feature flags (none "
    "loaded at start), no session recording, surveys, heatmaps or site apps." + _BROWSER_NOTES,
    "parameters": _path_key("token", "The project token: the tenant's write key."),
    "responses": {
        "200": _json({"type": "object", "required": ["token", "supportedCompression"]}, "The config."),
        "403": _FORBIDDEN,
        "404": openapi._error(404, "No tenant has this token (write key); posthog-js then sends without compression."),
        "429": _BLOCKED,
    },
}
POSTHOG_CONFIG_JS: dict[str, Any] = {
    **POSTHOG_CONFIG,
    "description": "The remote config as a script setting `window._POSTHOG_REMOTE_CONFIG[token]`: posthog-js loads "
    "it with a script tag, then the JSON at /array/<token>/config if that failed.",
    "responses": {
        **POSTHOG_CONFIG["responses"],
        "200": {"description": "The script.", "content": {"text/javascript": {"schema": {"type": "string"}}}},
    },
}

"""The OpenAPI operations of the Mixpanel, Amplitude and Snowplow routes (each route's `openapi_extra`).

As collector/openapi.py does for Segment and PostHog: the bodies are described exactly as strictly as the HTTP
layer reads them (a body of the documented shape is answered 200 whatever its events hold: a bad event is
dead-lettered), and every answer with its body and headers, in each vendor's own shape.
"""

from __future__ import annotations

from typing import Any

from collector.openapi import ENCODINGS, RETRY_AFTER, SECURITY_SCHEME

_ANY = {"description": "Any JSON value: each event is checked on its own, a bad one is dead-lettered."}
_NOTES = (
    " Gzip bodies (Content-Encoding: gzip) are read; at most ANALYTICS_COLLECTOR_MAX_BATCH_BYTES (500 KB), before "
    "and after decompression. The write key may also be sent as the Basic-auth user name, which wins."
)
_TIMEOUT = {
    "description": "The body did not arrive whole within ANALYTICS_HTTP_BODY_TIMEOUT_S; the connection is closed.",
    "content": {"application/json": {"schema": {"type": "object"}}},
}


def _json(description: str, schema: dict[str, Any], retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if retry_after:
        response["headers"] = {"Retry-After": RETRY_AFTER}
    return response


def _operation(description: str, responses: dict[str, Any], body: dict[str, Any] | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "description": description + _NOTES,
        "security": [{SECURITY_SCHEME: []}, {}],
        "x-content-encodings": list(ENCODINGS),
        "responses": responses,
    }
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": body}}
    return operation


def _errors(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "400": _json(
            "The body cannot be read: not JSON, not the protocol's shape (the reason names the field).", schema
        ),
        "401": _json("No write key, or an unknown one.", schema),
        "408": _TIMEOUT,
        "413": _json("The body is too large, or holds more events than the tenant's burst: split it.", schema),
        "429": _json("The tenant is over its rate limit (or the address is blocked): retry after.", schema, True),
        "503": _json("Kafka did not acknowledge: nothing was kept, send it again after Retry-After.", schema, True),
    }


# --- Mixpanel -------------------------------------------------------------------------------------------------

_MIXPANEL_EVENT = {
    "type": ["array", "object"],
    "description": "An array of events, or one event: {event, properties: {token, distinct_id, time, $insert_id, …}} "
    "(/engage: profile updates {$token, $distinct_id, $set, …}). As a form or query string: data=<this JSON, or "
    "its base64>; /import also takes newline-delimited JSON (Content-Type: application/x-ndjson).",
    "items": _ANY,
    "properties": {
        "event": {"description": "The event name; $mp_web_page_view is a page view."},
        "properties": {"description": "A JSON object: token (the write key), distinct_id, time, $insert_id, …"},
    },
    "example": [
        {
            "event": "Signed Up",
            "properties": {"token": "<write key>", "distinct_id": "user-1", "time": 1768471200, "$insert_id": "e-1"},
        }
    ],
}
_MIXPANEL_ERROR = {"type": "object", "required": ["status", "error"], "properties": {"status": {"const": 0}}}
_MIXPANEL_OK = {
    "anyOf": [
        {"const": 1},
        {"type": "object", "required": ["status", "error"], "properties": {"status": {"const": 1}}},
    ],
    "description": "1, or {status: 1, error: null} when verbose=1 was sent.",
}
_IMPORT_OK = {
    "type": "object",
    "required": ["code", "num_records_imported", "status"],
    "properties": {"code": {"const": 200}, "num_records_imported": {"type": "integer"}, "status": {"const": 1}},
}
_MIXPANEL_NOTES = (
    " The key: the Basic-auth user name, else the token of the events (all the same). Answers 200 also when some "
    "events were dead-lettered (they are counted); /import with strict=1 then answers 400 naming each in "
    "failed_records (the others are kept)."
)


def mixpanel(endpoint: str, method: str) -> dict[str, Any]:
    """The operation of /track, /import or /engage (POST, or GET with ?data=)."""
    if endpoint == "import":
        ok = {"200": _json("Imported (dead-lettered events included).", _IMPORT_OK)}
        import_error = {**_MIXPANEL_ERROR, "required": ["code", "status", "error"]}
        errors = _errors(import_error)
        errors["400"]["description"] += (
            " With strict=1: some events were dead-lettered, each named in failed_records {index, insert_id, field, "
            "message}, and num_records_imported counts the others, which are kept."
        )
        return _operation(f"Mixpanel /{endpoint}.{_MIXPANEL_NOTES}", ok | errors, _body(_MIXPANEL_EVENT))
    ok = {"200": _json("Taken in (dead-lettered events included).", _MIXPANEL_OK)}
    description = f"Mixpanel /{endpoint}.{_MIXPANEL_NOTES}"
    if method == "POST":
        return _operation(description, ok | _errors(_MIXPANEL_ERROR), _body(_MIXPANEL_EVENT))
    operation = _operation(description + " GET: the events are the query's data.", ok | _errors(_MIXPANEL_ERROR))
    data = {"schema": {k: v for k, v in _MIXPANEL_EVENT.items() if k != "example"}}
    operation["parameters"] = [{"name": "data", "in": "query", "required": True, "content": {"application/json": data}}]
    return operation


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"schema": {k: v for k, v in schema.items() if k != "example"}, "example": schema["example"]}


# --- Amplitude ------------------------------------------------------------------------------------------------

_AMPLITUDE_BODY = {
    "type": "object",
    "required": ["events"],
    "properties": {
        "api_key": {"description": "The write key (a non-empty string), when not sent as Basic auth."},
        "events": {"type": "array", "items": _ANY, "description": "{event_type, user_id, device_id, time, …}"},
        "options": {"description": "Accepted and not used (min_id_length)."},
    },
    "example": {
        "api_key": "<write key>",
        "events": [{"event_type": "Signed Up", "user_id": "user-1", "time": 1768471200000, "insert_id": "e-1"}],
    },
}
_AMPLITUDE_OK = {
    "type": "object",
    "required": ["code", "events_ingested", "payload_size_bytes", "server_upload_time"],
    "properties": {"code": {"const": 200}, "events_ingested": {"type": "integer"}},
}
_AMPLITUDE_ERROR = {
    "type": "object",
    "required": ["code", "error"],
    "properties": {
        "code": {"type": "integer"},
        "error": {"type": "string", "description": "'Invalid API key: …' for an unknown key (answered 400)."},
        "missing_field": {"type": "string", "description": "On 400: the field at fault (api_key, events, body)."},
        "throttled_events": {"type": "array", "description": "On 429: empty, so the SDKs resend after their backoff."},
    },
}
_POSTHOG_OK = {"type": "object", "required": ["code", "status"], "properties": {"code": {"const": 200}}}
# What /batch hands on to PostHog's /batch/: an object with `batch` and without `events`.
_POSTHOG_BATCH_BODY = {
    "type": "object",
    "required": ["batch"],
    "not": {"required": ["events"]},
    "properties": {
        "batch": {"type": "array", "items": _ANY, "description": "PostHog events; answered 307 to /batch/."}
    },
}
_AMPLITUDE_NOTES = (
    " Answers as Amplitude does, for its SDKs' retries: 200 also when some events were dead-lettered; 400 for a "
    "body that cannot be read or a missing/unknown api_key (then the SDKs drop the events); 413 (they split the "
    "batch); 429 with Retry-After (they resend)."
)


def amplitude(path: str) -> dict[str, Any]:
    if path == "/batch":
        description = (
            "Amplitude's Batch API. A JSON object with `batch` and without `events` is PostHog's: it is answered 307 "
            "to /batch/ (PostHog's capture batch), so the answer is then PostHog's."
        )
        ok = _json("Taken in (Amplitude), or PostHog's answer.", {"anyOf": [_AMPLITUDE_OK, _POSTHOG_OK]})
    else:
        description, ok = "Amplitude's HTTP V2 API.", _json("Taken in (dead-lettered events included).", _AMPLITUDE_OK)
    errors = _errors(_AMPLITUDE_ERROR)
    errors["400"]["description"] += " Also a missing api_key (missing_field) or an unknown one ('Invalid API key: …')."
    if path != "/batch":  # Amplitude answers keys with 400; only PostHog's /batch/, behind the redirect, says 401
        del errors["401"]
    body = _body(_AMPLITUDE_BODY)
    if path == "/batch":  # or PostHog's batch, which the 307 sends on to /batch/
        body["schema"] = {"anyOf": [body["schema"], _POSTHOG_BATCH_BODY]}
    return _operation(description + _AMPLITUDE_NOTES, {"200": ok} | errors, body)


# --- Snowplow -------------------------------------------------------------------------------------------------

_SNOWPLOW_BODY = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "schema": {"description": "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4"},
        "data": {"type": "array", "items": _ANY, "description": "Tracker-protocol events {e, eid, aid, dtm, …}."},
    },
    "example": {
        "schema": "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4",
        "data": [{"e": "pv", "eid": "0b1c", "aid": "<write key>", "dtm": "1768471200000", "uid": "user-1"}],
    },
}
_TEXT = {"text/plain": {"schema": {"type": "string"}}}
_PIXEL_PARAMETERS = (
    *("e", "aid", "eid", "dtm", "stm", "ttm", "p", "tv", "tna", "uid", "duid", "nuid", "tnuid", "url", "page", "refr"),
    *("ua", "ip", "ue_pr", "ue_px", "co", "cx", "se_ca", "se_ac", "se_la", "se_pr", "se_va"),
    *("tr_id", "tr_tt", "tr_cu", "ti_id", "ti_sk", "ti_pr", "ti_qu"),
)
_SNOWPLOW_NOTES = (
    " The key: the app id (aid, the same for every event of a request), or the Basic-auth user name. Errors answer "
    "the status the trackers act on (400, 401: they give up; 413, 429, 503: they retry) with the reason as text."
)


def snowplow(method: str) -> dict[str, Any]:
    errors = {
        status: {**response, "content": _TEXT} if status != "408" else response
        for status, response in _errors({}).items()
    }
    if method == "POST":
        ok = {"200": {"description": "Taken in (dead-lettered events included).", "content": _TEXT}}
        return _operation("Snowplow tracker protocol v2, POST." + _SNOWPLOW_NOTES, ok | errors, _body(_SNOWPLOW_BODY))
    gif = {"image/gif": {"schema": {"type": "string", "format": "binary"}}}
    ok = {"200": {"description": "A 1x1 GIF: taken in (a dead-lettered event included).", "content": gif}}
    operation = _operation("Snowplow tracker protocol v2, the GET pixel: one event." + _SNOWPLOW_NOTES, ok | errors)
    operation["parameters"] = [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"}} for name in _PIXEL_PARAMETERS
    ]
    return operation

"""Snowplow's tracker protocol v2: POST /com.snowplowanalytics.snowplow/tp2 and the GET pixel /i → Segment-shaped
messages, and a collector's answers.

Snowplow has no write key: the app id (`aid`) is taken as the write key, unless the request carries Basic auth
(which wins, and then `aid` is kept as an ordinary field). docs/COLLECTOR.md, "Snowplow", has the full mapping.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import PlainTextResponse, Response

from collector.adapters import ORIGINAL
from collector.body import BodyError, parse_json
from collector.ingest import Prepared
from collector.protocols import PIXEL, base64_json, epoch_time, has_basic_auth, number, one_key, text, url_path

IGLU = re.compile(r"^iglu:([^/]+)/([^/]+)/([^/]+)/([^/]+)$")  # iglu:<vendor>/<name>/<format>/<version>
# Tracker-protocol fields that become message fields; every other field is kept in properties as `$<field>`.
MAPPED = frozenset(
    {"e", "eid", "dtm", "stm", "ttm", "uid", "duid", "tnuid", "nuid", "ip", "ua", "tv", "url", "page", "refr"}
    | {"ue_pr", "ue_px", "co", "cx"}
)
STRUCTURED = {"se_ca": "category", "se_ac": "action", "se_la": "label", "se_pr": "property", "se_va": "value"}
TRANSACTION = {
    "tr_id": "order_id",
    "tr_af": "affiliation",
    "tr_tt": "revenue",
    "tr_tx": "tax",
    "tr_sh": "shipping",
    "tr_ci": "city",
    "tr_st": "state",
    "tr_co": "country",
    "tr_cu": "currency",
}
ITEM = {
    "ti_id": "order_id",
    "ti_sk": "sku",
    "ti_nm": "name",
    "ti_ca": "category",
    "ti_pr": "price",
    "ti_qu": "quantity",
    "ti_cu": "currency",
}
PAGE_PING = {"pp_mix": "min_x", "pp_max": "max_x", "pp_miy": "min_y", "pp_may": "max_y"}
NUMBERS = frozenset({"value", "revenue", "tax", "shipping", "price", "quantity", "min_x", "max_x", "min_y", "max_y"})
NAMED = {"se": STRUCTURED, "tr": TRANSACTION, "ti": ITEM, "pp": PAGE_PING}
EVENT_NAMES = {"pv": None, "pp": "Page Ping", "tr": "Order Completed", "ti": "Order Item"}


@dataclass
class SnowplowBody:
    events: list[Any] = field(default_factory=list)
    basic_auth: bool = False
    user_agent: str | None = None


def decode_post(body: bytes, request: Request) -> SnowplowBody:
    """The events of a payload_data self-describing JSON; BodyError(400) when it is not one."""
    document = parse_json(body)
    if not isinstance(document, dict):
        raise BodyError(400, 'body: must be a payload_data self-describing JSON: {"schema": "iglu:…", "data": [...]}')
    events = document.get("data")
    if events is None:
        raise BodyError(400, "data: is required: the list of events")
    if not isinstance(events, list):
        raise BodyError(400, "data: must be a list of events")
    return SnowplowBody(events, has_basic_auth(request), request.headers.get("user-agent"))


def decode_get(body: bytes, request: Request) -> SnowplowBody:
    """The pixel's one event: its query parameters."""
    return SnowplowBody([dict(request.query_params)], has_basic_auth(request), request.headers.get("user-agent"))


def events(doc: SnowplowBody) -> tuple[list[Any], str | None]:
    """(messages, the events' app id or None). With Basic auth the app id is not the key, and it is kept."""
    key = None if doc.basic_auth else one_key((e.get("aid") for e in doc.events if isinstance(e, dict)), "aid")
    drop = frozenset() if doc.basic_auth else frozenset({"aid"})
    return [event_message(e, doc.user_agent, drop) if isinstance(e, dict) else e for e in doc.events], key


def event_message(event: dict[str, Any], user_agent: str | None, drop: frozenset[str]) -> dict[str, Any]:
    kind = event.get("e")
    msg: dict[str, Any] = {ORIGINAL: event}
    props: dict[str, Any] = {}
    named = NAMED.get(kind, {}) if isinstance(kind, str) else {}
    for key, value in event.items():
        if key in named:
            name = named[key]
            props[name] = _number(value) if name in NUMBERS else value
        elif key not in MAPPED and key not in drop:
            props[f"${key}"] = value
    if kind == "pv":
        msg["type"], msg["name"] = "page", event.get("page")
        props.update({k: v for k, v in (("url", event.get("url")), ("title", event.get("page"))) if v is not None})
    elif kind == "se":
        parts = (text(event.get("se_ca")), text(event.get("se_ac")))
        msg["type"], msg["event"] = "track", "/".join(part for part in parts if part) or None
    elif kind == "ue":
        event_name, data = _self_describing(event)
        msg["type"], msg["event"] = "track", event_name
        props.update(data)
    elif kind in ("tr", "ti"):
        msg["type"], msg["event"] = "track", EVENT_NAMES[kind]
        if isinstance(props.get("currency"), str):
            props["currency"] = props["currency"].upper()
    else:
        msg["type"], msg["event"] = "track", EVENT_NAMES.get(kind, kind) if isinstance(kind, str) else None
    contexts = _contexts(event)
    if contexts is not None:
        props["$contexts"] = contexts
    for src, dst in (("eid", "messageId"), ("uid", "userId")):
        if event.get(src) is not None:
            msg[dst] = event[src]
    anonymous = event.get("duid") or event.get("tnuid") or event.get("nuid")
    if anonymous:
        msg["anonymousId"] = anonymous
    if event.get("ttm") is not None:  # the true time, set by the app: no skew correction (Snowplow's own rule)
        msg["timestamp"] = epoch_time(event["ttm"], "ms")
    else:
        if event.get("dtm") is not None:
            msg["timestamp"] = epoch_time(event["dtm"], "ms")
        if event.get("stm") is not None:
            msg["sentAt"] = epoch_time(event["stm"], "ms")
    msg["properties"] = props
    msg["context"] = _context(event, user_agent)
    return msg


def _number(value: Any) -> Any:
    """Numeric text (trackers send every field as text) as a number; anything else as sent, for the schemas."""
    amount = number(value)
    return value if amount is None else int(amount) if amount.is_integer() and abs(amount) < 2**53 else amount


def _self_describing(event: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(event name, properties) of ue_pr / ue_px: the name is the schema's (iglu:com.acme/checkout/… → checkout),
    the properties its data and `$schema`. Unreadable: no name, so the pipeline dead-letters it (event: required)."""
    outer = _json_field(event, "ue_pr", "ue_px")
    inner = outer.get("data") if isinstance(outer, dict) else None
    if not (isinstance(inner, dict) and "schema" in inner):
        inner = outer  # an unwrapped self-describing event
    if not isinstance(inner, dict):
        return None, {}
    schema = inner.get("schema")
    match = IGLU.match(schema) if isinstance(schema, str) else None
    data = inner.get("data")
    return (match.group(2) if match else None), {
        **(data if isinstance(data, dict) else {"data": data}),
        "$schema": schema,
    }


def _contexts(event: dict[str, Any]) -> Any:
    """The entities of co / cx ([{schema, data}, …]); the text as sent when it is not readable JSON."""
    if "co" not in event and "cx" not in event:
        return None
    document = _json_field(event, "co", "cx")
    if isinstance(document, dict) and "data" in document:
        return document["data"]
    return document if document is not None else event.get("co", event.get("cx"))


def _json_field(event: dict[str, Any], plain: str, encoded: str) -> Any:
    try:
        if isinstance(event.get(plain), str):
            return orjson.loads(event[plain])
        if isinstance(event.get(plain), dict):
            return event[plain]
        if isinstance(event.get(encoded), str):
            return base64_json(event[encoded])
    except (orjson.JSONDecodeError, ValueError):
        return None
    return None


def _context(event: dict[str, Any], user_agent: str | None) -> dict[str, Any]:
    context: dict[str, Any] = {}
    if event.get("ip") is not None:
        context["ip"] = event["ip"]
    # A collector records the request's User-Agent: the user's browser's for the JavaScript tracker (p=web);
    # a server tracker's (python-requests …) describes the server, and would make every event a bot's.
    agent = event.get("ua") or (user_agent if event.get("p") == "web" else None)
    if agent:
        context["userAgent"] = agent
    tracker = event.get("tv")
    if isinstance(tracker, str) and tracker:
        platform, _, version = tracker.partition("-")
        context["library"] = {"name": f"snowplow-{platform}", "version": version}
    page = {k: event[src] for k, src in (("url", "url"), ("title", "page"), ("referrer", "refr")) if src in event}
    page["path"] = url_path(event.get("url"))
    page = {k: v for k, v in page.items() if v is not None}
    if page:
        context["page"] = page
    return context


def success_post(prepared: Prepared) -> Response:
    return PlainTextResponse("ok")


def success_pixel(prepared: Prepared) -> Response:
    return Response(PIXEL, media_type="image/gif", headers={"Cache-Control": "no-cache, no-store"})


def error(status: int, message: str, retry_after: int | None) -> Response:
    """The status the trackers act on (400, 401, 403, 410, 422: give up; others: retry with backoff) and the
    reason as text."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return PlainTextResponse(message, status_code=status, headers=headers)

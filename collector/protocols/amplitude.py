"""Amplitude's HTTP V2 (/2/httpapi) and Batch (/batch) APIs → Segment-shaped messages, and Amplitude's answers.

Both take `{"api_key": …, "events": [...], "options": {...}}` as JSON; api_key is the write key (Basic auth wins
when sent). The answers are shaped for the SDKs' retry logic (amplitude-analytics' ResponseProcessor reads the
JSON `code` and fields, not the HTTP status): see `Answers`. docs/COLLECTOR.md, "Amplitude", has the full mapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from collector.adapters import ORIGINAL, PayloadError
from collector.body import parse_json
from collector.ingest import Prepared
from collector.protocols import epoch_time, now_ms, number, profile_traits, split_library, text
from tenants import KeyCache

IDENTIFY, GROUP_IDENTIFY, PAGE_VIEWED = "$identify", "$groupidentify", "[Amplitude] Page Viewed"
PAGE_PREFIX = "[Amplitude] Page "
SET_OPS = ("$setOnce", "$set")  # in this order: $set wins over $setOnce for a key both name
# Fields that become message fields; every other field of an event is kept in properties as `$<field>`.
MAPPED = frozenset(
    {"user_id", "device_id", "event_type", "time", "insert_id", "event_properties", "ip", "user_agent", "library"}
)
REVENUE_FIELDS = frozenset({"revenue", "currency"})  # kept as properties.revenue / currency, not `$` keys
THROTTLED = "Too many requests for some devices and users"


@dataclass
class AmplitudeBody:
    document: Any
    size: int  # bytes, decompressed: the answer's payload_size_bytes
    user_agent: str | None = None


def decode(body: bytes, request: Request) -> AmplitudeBody:
    return AmplitudeBody(parse_json(body), len(body), request.headers.get("user-agent"))


def batch(doc: AmplitudeBody) -> tuple[list[Any], str | None]:
    """(messages, api_key or None); PayloadError when the body has no `events` list."""
    body = doc.document
    if not isinstance(body, dict):
        raise PayloadError("body", 'must be a JSON object: {"api_key": "<write key>", "events": [...]}')
    events = body.get("events")
    if events is None:
        raise PayloadError("events", "is required")
    if not isinstance(events, list):
        raise PayloadError("events", "must be a list of events")
    messages = [event_message(e, doc.user_agent) if isinstance(e, dict) else e for e in events]
    return messages, text(body.get("api_key"))


def event_message(event: dict[str, Any], user_agent: str | None) -> dict[str, Any]:
    name = event.get("event_type")
    props = event.get("event_properties")
    p = props if isinstance(props, dict) else {}
    msg: dict[str, Any] = {ORIGINAL: event}
    for src, dst in (("user_id", "userId"), ("device_id", "anonymousId"), ("insert_id", "messageId")):
        if event.get(src) is not None:
            msg[dst] = event[src]
    if "time" in event:
        msg["timestamp"] = epoch_time(event["time"], "ms")
    mapped = MAPPED
    if name == IDENTIFY:
        msg["type"], mapped = "identify", MAPPED | {"user_properties"}
        ops = event.get("user_properties")
        msg["traits"] = _traits(ops)
    elif name == GROUP_IDENTIFY:
        groups = event.get("groups")
        group_type, group = next(iter(groups.items())) if isinstance(groups, dict) and groups else (None, None)
        msg["type"], msg["groupId"], mapped = "group", group, MAPPED | {"groups", "group_properties"}
        msg["traits"] = {**_traits(event.get("group_properties")), "group_type": group_type}
    elif name == PAGE_VIEWED:
        msg["type"], msg["name"] = "page", p.get(PAGE_PREFIX + "Title")
    else:
        msg["type"], msg["event"] = "track", name
    if props is not None and props is not p:
        msg["properties"] = props  # not an object: the pipeline dead-letters it (properties: must be …)
    else:
        extra = {f"${k}": v for k, v in event.items() if k not in mapped and k not in REVENUE_FIELDS}
        msg["properties"] = {**extra, **p, **_revenue(event, p)}
    msg["context"] = _context(event, p, user_agent)
    return msg


def _traits(ops: Any) -> dict[str, Any]:
    """Traits of user_properties: plain keys (the HTTP API takes them as $set), then $setOnce and $set merged,
    then every other operation ($add, $unset …) kept whole under its name."""
    if not isinstance(ops, dict):
        return {}
    others = {key: value for key, value in ops.items() if key.startswith("$") and key not in SET_OPS}
    plain = {key: value for key, value in ops.items() if not key.startswith("$")}
    return {**plain, **profile_traits(ops, SET_OPS, ()), **others}


def _revenue(event: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    """properties.revenue and currency when event_properties has none: revenue, else price x quantity (1 when not
    sent), at the event's top level, else the $revenue / $price x $quantity of a revenue event's properties."""
    out: dict[str, Any] = {}
    if "revenue" not in p and "total" not in p:
        amount = _amount(event, "revenue", "price", "quantity")
        if amount is None:
            amount = _amount(p, "$revenue", "$price", "$quantity")
        if amount is not None:
            out["revenue"] = amount
    currency = text(event.get("currency")) or text(p.get("$currency"))
    if "currency" not in p and currency is not None:
        out["currency"] = currency
    return out


def _amount(source: dict[str, Any], revenue: str, price: str, quantity: str) -> float | None:
    value = number(source.get(revenue))
    if value is not None:
        return value
    each = number(source.get(price))
    if each is None:
        return None
    count = number(source.get(quantity))
    return each * (1 if count is None else count)


def _context(event: dict[str, Any], p: dict[str, Any], user_agent: str | None) -> dict[str, Any]:
    context: dict[str, Any] = {}
    if event.get("ip") is not None and event["ip"] != "$remote":  # $remote: the request's address (the default)
        context["ip"] = event["ip"]
    agent = event.get("user_agent")
    # The browser SDK's requests carry the user's browser's User-Agent; a server SDK's describe the server.
    if agent is None and event.get("platform") == "Web" and user_agent:
        agent = user_agent
    if agent is not None:
        context["userAgent"] = agent
    lib = split_library(event.get("library"))
    if lib is not None:
        context["library"] = lib
    page = {
        key: p[PAGE_PREFIX + name]
        for key, name in (("path", "Path"), ("url", "URL"), ("title", "Title"))
        if text(p.get(PAGE_PREFIX + name))
    }
    if page:
        context["page"] = page
    return context


class Answers:
    """One request's answers, shaped for amplitude-analytics' ResponseProcessor:

    - 200 `events_ingested`: done (dead letters included: the SDK must not resend them);
    - 400 with `missing_field`: the SDK reports the events to its callback and drops them (a resend would get the
      same 400); with `error` "Invalid API key: …" (an unknown key) it logs "Invalid API Key" and drops them;
    - 413: it halves its batch size and resends (one event alone is reported and dropped);
    - 429 with no `throttled_events`: it resends every event after its own backoff (100 ms doubling to 3.2 s,
      12 tries); listed events would wait 30 s each try, far more than Retry-After asks;
    - 503 (Kafka): it resends.
    """

    def __init__(self, keys: KeyCache) -> None:
        self.keys = keys
        self.body: AmplitudeBody | None = None

    def decode(self, body: bytes, request: Request) -> AmplitudeBody:
        self.body = decode(body, request)
        return self.body

    def success(self, prepared: Prepared) -> Response:
        ingested = prepared.received - sum(prepared.dead_letter_reasons.values())
        size = self.body.size if self.body is not None else 0
        return JSONResponse(
            {"code": 200, "events_ingested": ingested, "payload_size_bytes": size, "server_upload_time": now_ms()}
        )

    def error(self, status: int, message: str, retry_after: int | None) -> Response:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        body: dict[str, Any] = {"code": status, "error": message}
        if status == 401:
            key = self._api_key()
            status = 400  # Amplitude answers a missing or unknown key with 400, which the SDK reads as said above
            if key is None:
                body = {"code": 400, "error": f"Request missing required field: {message}", "missing_field": "api_key"}
            else:
                body = {"code": 400, "error": f"Invalid API key: {message}"}
        elif status == 400:
            field = message.partition(":")[0]
            body["missing_field"] = "body" if " " in field else field
        elif status == 429:
            tenant = self.keys.tenant_for_write_key(self._api_key() or "")
            body = {"code": 429, "error": f"{THROTTLED} ({message})", "throttled_devices": {}, "throttled_users": {}}
            body["throttled_events"] = []
            if tenant is not None:
                body["eps_threshold"] = tenant.settings.events_per_second_limit
        return JSONResponse(body, status_code=status, headers=headers)

    def _api_key(self) -> str | None:
        document = self.body.document if self.body is not None else None
        return text(document.get("api_key")) if isinstance(document, dict) else None


def redirect_target(request: Request) -> str:
    """Where a PostHog body sent to /batch goes: /batch/ with the same query, as a relative URL."""
    query = request.url.query
    return "/batch/" + (f"?{query}" if query else "")


class NotAmplitude(Exception):
    """A /batch body that is not Amplitude's: the route sends it on to PostHog's /batch/ (handle() lets it through)."""


class BatchAnswers(Answers):
    """/batch's answers, whose decoder also tells Amplitude's bodies from PostHog's."""

    def decode(self, body: bytes, request: Request) -> AmplitudeBody:
        document = parse_json(body)
        # PostHog's batches have `batch`; everything else is Amplitude's to answer (a missing `events` is a 400).
        if isinstance(document, dict) and "batch" in document and "events" not in document:
            raise NotAmplitude
        self.body = AmplitudeBody(document, len(body), request.headers.get("user-agent"))
        return self.body

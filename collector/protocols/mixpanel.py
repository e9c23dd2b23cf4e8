"""Mixpanel's ingestion API: /track, /import and /engage bodies → Segment-shaped messages, and Mixpanel's answers.

Bodies: JSON (an array of events or one event; /import also newline-delimited JSON), or a form (or query string)
whose `data` is that JSON, as is (mixpanel-python) or base64-encoded (mixpanel-js). The key is the Basic-auth
user name when sent (/import's project-secret or service-account style), else the project token of the events
(`properties.token`, /engage's `$token`). docs/COLLECTOR.md, "Mixpanel", has the full mapping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from analytics_core.deadletter import DeadLetter
from collector.adapters import ORIGINAL
from collector.body import BodyError, parse_json
from collector.ingest import Prepared
from collector.protocols import (
    base64_json,
    epoch_time,
    has_basic_auth,
    library,
    one_key,
    profile_traits,
    text,
    url_path,
)

PAGE_EVENTS = frozenset({"$mp_web_page_view", "mp_page_view"})
# Properties that became a message field (ids, time, ip) or are a credential: not kept in properties.
MAPPED = frozenset({"token", "distinct_id", "time", "$insert_id", "$user_id", "$device_id", "ip", "$ip"})
SET_OPS = ("$set_once", "$set")  # in this order: $set wins over $set_once for a key both name
OTHER_OPS = ("$add", "$append", "$union", "$remove", "$unset", "$delete")
DEVICE_PREFIX = "$device:"
NOT_EVENTS = "must be a JSON array of events (or one event object)"


@dataclass
class MixpanelBody:
    """One request as the decoder read it: its events or profile updates, and what the answer depends on."""

    items: list[Any] = field(default_factory=list)
    verbose: bool = False
    strict: bool = False  # failed_records (a 400) only when asked for: strict=1
    basic_auth: bool = False
    user_agent: str | None = None


def decode(body: bytes, request: Request) -> MixpanelBody:
    """The request's items; BodyError(400) naming what is wrong when none can be read."""
    params = {key: values[-1] for key, values in parse_qs(request.url.query, keep_blank_values=True).items()}
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    start = body.lstrip()[:1]
    if not start:
        if "data" not in params:
            raise BodyError(400, "data: is required: send the events as the body, or as ?data= in the query string")
        document = _data(params["data"])
    elif kind == "application/x-ndjson":
        document = [parse_json(line) for line in body.splitlines() if line.strip()]
    elif start in (b"[", b"{"):
        document = parse_json(body)
    elif b"=" not in body:
        raise BodyError(400, f"body: {NOT_EVENTS}, or a form holding them as data=<JSON or base64 JSON>")
    else:
        try:
            form = {key: values[-1] for key, values in parse_qs(body.decode(), keep_blank_values=True).items()}
        except UnicodeDecodeError:
            raise BodyError(400, "body: is neither JSON nor a form (data=…): it is not UTF-8 text") from None
        if "data" not in form:
            raise BodyError(400, "data: is required: a form body holds the events as data=<JSON or base64 JSON>")
        params.update(form)
        document = _data(form["data"])
    if isinstance(document, dict):
        document = [document]
    elif not isinstance(document, list):
        raise BodyError(400, f"body: {NOT_EVENTS}")
    return MixpanelBody(
        items=document,
        verbose=params.get("verbose") == "1",
        strict=params.get("strict") == "1",
        basic_auth=has_basic_auth(request),
        user_agent=request.headers.get("user-agent"),
    )


def _data(value: str) -> Any:
    stripped = value.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return orjson.loads(stripped)
        except orjson.JSONDecodeError as exc:
            raise BodyError(400, f"data: is not valid JSON ({exc})") from None
    try:
        return base64_json(stripped)
    except ValueError:
        raise BodyError(400, "data: is neither JSON nor base64-encoded JSON") from None


def events(doc: MixpanelBody) -> tuple[list[Any], str | None]:
    """/track and /import: (messages, the events' project token or None)."""
    messages = [event_message(e, doc.user_agent) if isinstance(e, dict) else e for e in doc.items]
    if doc.basic_auth:
        return messages, None
    return messages, one_key((_props(e).get("token") for e in doc.items), "properties.token")


def profiles(doc: MixpanelBody) -> tuple[list[Any], str | None]:
    """/engage: (identify messages, the updates' $token or None)."""
    messages = [profile_message(u) if isinstance(u, dict) else u for u in doc.items]
    if doc.basic_auth:
        return messages, None
    tokens = (u.get("$token") for u in doc.items if isinstance(u, dict))
    return messages, one_key(tokens, "$token")


def _props(event: Any) -> dict[str, Any]:
    props = event.get("properties") if isinstance(event, dict) else None
    return props if isinstance(props, dict) else {}


def event_message(event: dict[str, Any], user_agent: str | None) -> dict[str, Any]:
    props = event.get("properties")
    p = props if isinstance(props, dict) else {}
    name = event.get("event")
    msg: dict[str, Any] = {ORIGINAL: event}
    user_id, anonymous_id = _identity(p.get("distinct_id"), p.get("$user_id"), p.get("$device_id"))
    if not isinstance(name, str):
        msg["type"], msg["event"] = "track", name  # the pipeline dead-letters it (event: …)
    elif name in PAGE_EVENTS:
        msg["type"], msg["name"] = "page", p.get("current_page_title")
    elif name == "$identify":
        msg["type"], anonymous_id = "identify", p.get("$anon_distinct_id", anonymous_id)
    elif name == "$create_alias":
        msg["type"], msg["previousId"], user_id = "alias", p.get("distinct_id"), p.get("alias")
    else:
        msg["type"], msg["event"] = "track", name
    for key, value in (("userId", user_id), ("anonymousId", anonymous_id), ("messageId", p.get("$insert_id"))):
        if value is not None:
            msg[key] = value
    if "time" in p:
        msg["timestamp"] = epoch_time(p["time"])
    msg["properties"] = {k: v for k, v in p.items() if k not in MAPPED} if props is p else props
    msg["context"] = _context(p, user_agent)
    return msg


def _identity(distinct: Any, user: Any, device: Any) -> tuple[Any, Any]:
    """(userId, anonymousId): $user_id, else distinct_id unless it is the device's id ($device:… or $device_id)."""
    if isinstance(distinct, str) and distinct.startswith(DEVICE_PREFIX):
        device = device if device is not None else distinct[len(DEVICE_PREFIX) :]
    elif user is None and distinct is not None and distinct != "" and distinct != device:
        user = distinct
    return user, device


def _context(p: dict[str, Any], user_agent: str | None) -> dict[str, Any]:
    context: dict[str, Any] = {}
    ip = p.get("ip", p.get("$ip"))
    if ip is not None:
        context["ip"] = ip
    # mixpanel-js sends from the user's browser, so the request's User-Agent is the user's; a server library's
    # (python-requests …) describes the server, and would make every event a bot's.
    if p.get("mp_lib") == "web" and user_agent:
        context["userAgent"] = user_agent
    lib = library(f"mixpanel-{p['mp_lib']}" if text(p.get("mp_lib")) else None, p.get("$lib_version"))
    if lib is not None:
        context["library"] = lib
    url = text(p.get("$current_url"))
    page = {"url": url} if url else {}
    path = text(p.get("current_url_path")) or url_path(url)
    for key, value in (("path", path), ("title", text(p.get("current_page_title"))), ("referrer", p.get("$referrer"))):
        if value is not None:
            page[key] = value
    if page:
        context["page"] = page
    return context


def profile_message(update: dict[str, Any]) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "identify", ORIGINAL: update}
    user_id, anonymous_id = _identity(update.get("$distinct_id"), update.get("$user_id"), update.get("$device_id"))
    if user_id is not None:
        msg["userId"] = user_id
    if anonymous_id is not None:
        msg["anonymousId"] = anonymous_id
    msg["traits"] = profile_traits(update, SET_OPS, OTHER_OPS)
    if "$time" in update:
        msg["timestamp"] = epoch_time(update["$time"])
    if update.get("$ip") is not None:
        msg["context"] = {"ip": update["$ip"]}
    return msg


# Segment field names of dead-letter details, as Mixpanel names the field (in /import's failed_records).
FIELD_NAMES = {
    "message": "event",
    "userId/anonymousId": "properties.distinct_id",
    "userId": "properties.distinct_id",
    "anonymousId": "properties.$device_id",
    "messageId": "properties.$insert_id",
    "timestamp": "properties.time",
    "previousId": "properties.distinct_id",
}


class Answers:
    """One request's answers, which depend on what its decoder read (verbose, strict, the events themselves)."""

    def __init__(self, endpoint: str, dead_letter_topic: str) -> None:
        self.endpoint = endpoint
        self.dead_letter_topic = dead_letter_topic
        self.body = MixpanelBody()

    def decode(self, body: bytes, request: Request) -> MixpanelBody:
        self.body = decode(body, request)
        return self.body

    def success(self, prepared: Prepared) -> Response:
        if self.endpoint != "import":
            return JSONResponse({"status": 1, "error": None}) if self.body.verbose else JSONResponse(1)
        dead = (
            [DeadLetter.from_json(v) for t, _, v in prepared.records if t == self.dead_letter_topic]
            if prepared.dead_letter_reasons
            else []
        )
        imported = prepared.received - len(dead)
        if dead and self.body.strict:
            failed = failed_records(self.body.items, dead)
            error = f"{len(dead)} of {prepared.received} events failed validation (each kept as a dead letter)"
            body = {
                "code": 400,
                "error": error,
                "status": 0,
                "num_records_imported": imported,
                "failed_records": failed,
            }
            return JSONResponse(body, status_code=400)
        return JSONResponse({"code": 200, "error": None, "num_records_imported": imported, "status": 1})

    def error(self, status: int, message: str, retry_after: int | None) -> Response:
        # Always JSON with status 0: mixpanel-python reads response["status"] whatever it asked for, and a reader
        # of the short answer ("1") takes anything else as a failure, as it takes "0".
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        body: dict[str, Any] = {"status": 0, "error": message}
        if self.endpoint == "import":
            body = {"code": status, **body}
        return JSONResponse(body, status_code=status, headers=headers)


def failed_records(items: list[Any], dead: list[DeadLetter]) -> list[dict[str, Any]]:
    """/import's failed_records: each dead letter's event by its index in the request (dead letters keep the input
    order, and each payload is the event as received), its $insert_id, and the field in Mixpanel's words."""
    records, start = [], 0
    for letter in dead:
        index = next((i for i in range(start, len(items)) if items[i] == letter.payload), None)
        start = start if index is None else index + 1
        name, _, rule = letter.detail.partition(": ")
        name = FIELD_NAMES.get(name, name)
        insert_id = _props(letter.payload).get("$insert_id")
        records.append({"index": index, "insert_id": insert_id, "field": name, "message": f"{name}: {rule}"})
    return records

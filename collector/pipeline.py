"""The collector's one entry point: Segment-shaped messages → canonical events and typed dead letters."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson

from analytics_core.deadletter import DeadLetter
from collector import enrichment, promotion
from collector import validation as v
from collector.adapters import BATCH_SENT_AT, ORIGINAL
from collector.event_schemas import EventSchemas

# Namespace of ids made for messages without messageId: a resend of the same content gets the same id.
CONTENT_ID_NAMESPACE = uuid.UUID("0c5c1f62-5a57-4c4e-9a8e-0c6f3b1d7e21")
_DEFAULT_MAX_EVENT_BYTES = 32 * 1024  # Segment's limit for one event
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestContext:
    tenant_id: str
    received_at: int  # server time, microseconds since epoch UTC
    connection_ip: str | None  # the TCP peer, fallback when the SDK gives no ip
    allow_unknown_event_types: bool = True
    max_event_bytes: int = _DEFAULT_MAX_EVENT_BYTES


@dataclass(frozen=True)
class Processed:
    events: list[dict[str, Any]]  # canonical event dicts (pass events.check_event), in input order
    dead_letters: list[DeadLetter]  # one per rejected message, source="collector", typed reason, original payload


@cache
def default_schemas() -> EventSchemas:
    """The schemas in schemas/events/, compiled once per process."""
    return EventSchemas.from_dir()


def process_messages(messages: list[Any], ctx: RequestContext, schemas: EventSchemas | None = None) -> Processed:
    """Validate, enrich and convert each message; a bad one becomes a dead letter, never an exception."""
    schemas = default_schemas() if schemas is None else schemas
    events: list[dict[str, Any]] = []
    dead: list[DeadLetter] = []
    for msg in messages:
        try:
            events.append(to_event(msg, ctx, schemas))
        except v.Rejected as rejected:
            dead.append(_dead_letter(msg, ctx, rejected))
        except Exception as exc:
            # A message that trips a bug must not fail its batch: SDKs resend a failed batch forever.
            _log.exception("collector: unexpected error on one message; dead-lettered")
            failure = v.Rejected("format", "message", f"could not be processed ({type(exc).__name__}: {exc})")
            dead.append(_dead_letter(msg, ctx, failure))
    return Processed(events, dead)


def _dead_letter(msg: Any, ctx: RequestContext, rejected: v.Rejected) -> DeadLetter:
    payload = msg.get(ORIGINAL, msg) if isinstance(msg, dict) else msg
    return DeadLetter(rejected.reason, rejected.detail, ctx.tenant_id, ctx.received_at, payload, "collector")


def to_event(msg: Any, ctx: RequestContext, schemas: EventSchemas) -> dict[str, Any]:
    """The canonical event of one message, or Rejected with the dead-letter reason."""
    if not isinstance(msg, dict):
        raise v.Rejected("format", "message", "must be a JSON object")
    original = msg.get(ORIGINAL, msg)
    if not isinstance(original, dict):  # only adapters set it; a hand-built message may not
        original = msg
    v.check_size(original, ctx.max_event_bytes)
    mtype = v.message_type(msg)
    event_type = v.event_type(msg, mtype)
    user_id, anonymous_id = v.identity(msg)
    event_id = v.message_id(msg) or content_id(original, ctx.tenant_id)
    props = v.json_object(msg, "properties")
    traits = v.json_object(msg, "traits")
    context = v.json_object(msg, "context")
    client_time_key = "timestamp" if msg.get("timestamp") is not None else "originalTimestamp"
    original_ts = v.timestamp(msg.get(client_time_key), client_time_key)
    sent_at = v.timestamp(msg.get("sentAt"), "sentAt", repeated=True)
    if sent_at is None:
        sent_at = v.timestamp(msg.get(BATCH_SENT_AT), "sentAt", repeated=True)
    if mtype == "track" and not ctx.allow_unknown_event_types and event_type not in schemas:
        raise v.Rejected("unknown_event_type", "event", f"{event_type[:100]!r} has no schema for this tenant")
    schemas.validate(event_type, traits if mtype in ("identify", "group") else props, _schema_field(mtype))
    revenue = promotion.revenue(props)
    timestamp = enrichment.event_time(original_ts, sent_at, ctx.received_at)
    enrichment.check_not_future(timestamp, ctx.received_at)
    ip = promotion.ip(context, ctx.connection_ip)
    agent_text = promotion.user_agent(context)
    agent = enrichment.classify(agent_text)
    experiment_key, experiment_variant = promotion.experiment(msg, props)
    return {
        "event_id": event_id,
        "tenant_id": ctx.tenant_id,
        "message_type": mtype,
        "event_type": event_type,
        "user_id": user_id,
        "anonymous_id": anonymous_id,
        "timestamp": timestamp,
        "original_timestamp": original_ts,
        "sent_at": sent_at,
        "received_at": ctx.received_at,
        "properties": orjson.dumps(promotion.stored_properties(mtype, msg, props, traits)).decode(),
        "page": promotion.page(msg, props, context),
        "country": enrichment.country(ip),
        "device": agent.device,
        "revenue": revenue,
        "currency": promotion.currency(props),
        "experiment_key": experiment_key,
        "experiment_variant": experiment_variant,
        "ip": ip,
        "user_agent": agent_text,
        "library": promotion.library(context),
        "is_bot": agent.is_bot,
    }


def _schema_field(mtype: str) -> str:
    return "traits" if mtype in ("identify", "group") else "properties"


def content_id(original: dict[str, Any], tenant_id: str) -> str:
    """uuid5 of the tenant and the message content without sentAt, which a resend changes."""
    content = {k: val for k, val in original.items() if k != "sentAt"}
    text = orjson.dumps(content, option=orjson.OPT_SORT_KEYS).decode()
    return str(uuid.uuid5(CONTENT_ID_NAMESPACE, f"{tenant_id}\n{text}"))

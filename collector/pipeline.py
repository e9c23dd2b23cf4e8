"""The collector's one entry point: Segment-shaped messages → canonical events and typed dead letters."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson

from analytics_core.bounds import MAX_TIME_US, MIN_TIME_US, Bounds
from analytics_core.catalogue import PurchaseMapping
from analytics_core.deadletter import DeadLetter
from collector import enrichment, promotion
from collector import validation as v
from collector.adapters import BATCH_SENT_AT, EXPERIMENT, ORIGINAL
from collector.event_schemas import EventSchemas

# Namespace of ids made for messages without messageId: a resend of the same content gets the same id.
CONTENT_ID_NAMESPACE = uuid.UUID("0c5c1f62-5a57-4c4e-9a8e-0c6f3b1d7e21")
_DEFAULT_MAX_EVENT_BYTES = 32 * 1024  # Segment's limit for one event
DEFAULT_BOUNDS = Bounds()
DEFAULT_REVENUE_KEYS = PurchaseMapping().revenue_properties
_MESSAGE_TYPES = frozenset(v.MESSAGE_TYPES)
_MAX_EVENT_NAME, _MAX_ID, _MAX_KEYS = v.MAX_EVENT_NAME_CHARS, v.MAX_ID_CHARS, v.MAX_KEYS
_micros = v._micros
_TRAITS_TYPES = ("identify", "group")  # message types whose traits, not properties, are validated
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestContext:
    tenant_id: str
    received_at: int  # server time, microseconds since epoch UTC
    connection_ip: str | None  # the TCP peer, fallback when the SDK gives no ip
    allow_unknown_event_types: bool = True
    max_event_bytes: int = _DEFAULT_MAX_EVENT_BYTES
    # Ranges of revenue and times (analytics_core/bounds.py); the app passes those of its settings.
    bounds: Bounds = DEFAULT_BOUNDS
    # The properties the revenue column is read from, first present wins: the tenant's purchase mapping
    # (metric catalogue, `purchases.revenue_properties`).
    revenue_keys: tuple[str, ...] = DEFAULT_REVENUE_KEYS


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
    """The canonical event of one message, or Rejected with the dead-letter reason.

    The hot path of the collector: the usual case of each rule is checked inline, and anything else
    (absent, wrong type, too long …) goes to the validation/promotion function of that rule, which
    raises its dead letter or returns the value. The rules and their order are the functions' own.
    """
    if not isinstance(msg, dict):
        raise v.Rejected("format", "message", "must be a JSON object")
    get = msg.get
    original = get(ORIGINAL, msg)
    if not isinstance(original, dict):  # only adapters set it; a hand-built message may not
        original = msg
    v.check_size(original, ctx.max_event_bytes)
    mtype = get("type")
    if type(mtype) is not str or mtype not in _MESSAGE_TYPES:
        mtype = v.message_type(msg)
    if mtype == "track":
        event_type = get("event")
        if type(event_type) is not str or not event_type or len(event_type) > _MAX_EVENT_NAME:
            event_type = v.event_type(msg, mtype)
    else:
        event_type = v.event_type(msg, mtype)
    user_id, anonymous_id = get("userId"), get("anonymousId")
    if (user_id is not None and (type(user_id) is not str or not user_id or len(user_id) > _MAX_ID)) or (
        anonymous_id is not None and (type(anonymous_id) is not str or not anonymous_id or len(anonymous_id) > _MAX_ID)
    ):
        user_id, anonymous_id = v.identity(msg)
    elif user_id is None and anonymous_id is None:
        v.identity(msg)  # raises: one of them is required
    event_id = get("messageId")
    if type(event_id) is not str or not event_id or len(event_id) > _MAX_ID:
        event_id = v.message_id(msg) or content_id(original, ctx.tenant_id)
    props, traits, context = get("properties"), get("traits"), get("context")
    if type(props) is not dict or len(props) > _MAX_KEYS:
        props = v.json_object(msg, "properties")
    if type(traits) is not dict or len(traits) > _MAX_KEYS:
        traits = v.json_object(msg, "traits")
    if type(context) is not dict or len(context) > _MAX_KEYS:
        context = v.json_object(msg, "context")
    client_time = get("timestamp")
    client_time_key = "timestamp" if client_time is not None else "originalTimestamp"
    if client_time is None:
        client_time = get(client_time_key)
    try:
        original_ts = _micros(client_time) if type(client_time) is str else v.timestamp(client_time, client_time_key)
    except (ValueError, OverflowError):
        original_ts = v.timestamp(client_time, client_time_key)  # raises the format dead letter
    sent_at = v.timestamp(get("sentAt"), "sentAt", repeated=True)
    if sent_at is None:
        sent_at = v.timestamp(get(BATCH_SENT_AT), "sentAt", repeated=True)
    currency = props.get("currency")
    if type(currency) is str and not currency.isupper():
        # Normalised before validation: "usd" is USD (stored so, in properties and the currency column).
        props = {**props, "currency": promotion.currency_code(currency)}
    if mtype == "track" and not ctx.allow_unknown_event_types and event_type not in schemas:
        raise v.Rejected("unknown_event_type", "event", f"{event_type[:100]!r} has no schema for this tenant")
    schemas.validate(event_type, traits if mtype in _TRAITS_TYPES else props, _schema_field(mtype))
    bounds = ctx.bounds
    revenue_keys = ctx.revenue_keys
    revenue = None if props.keys().isdisjoint(revenue_keys) else promotion.revenue(props, bounds, revenue_keys)
    received_at = ctx.received_at
    timestamp = enrichment.event_time(original_ts, sent_at, received_at)
    if not -bounds.max_age_us <= timestamp - received_at <= bounds.max_future_us:
        enrichment.check_event_time(timestamp, received_at, bounds)
    # A clock consistently off (both times in year 1) gives a fine event time, but its times are stored too.
    if original_ts is not None and not MIN_TIME_US <= original_ts < MAX_TIME_US:
        raise v.Rejected("out_of_range", client_time_key, Bounds.client_time_rule(original_ts) or "")
    if sent_at is not None and not MIN_TIME_US <= sent_at < MAX_TIME_US:
        raise v.Rejected("out_of_range", "sentAt", Bounds.client_time_rule(sent_at) or "")
    ip = context.get("ip")
    if type(ip) is not str or not ip:
        ip = promotion.ip(context, ctx.connection_ip)
    agent_text = context.get("userAgent")
    if type(agent_text) is not str or not agent_text:
        agent_text = promotion.user_agent(context)
    agent = enrichment.classify(agent_text)
    if "experiment_key" in props or EXPERIMENT in msg:
        experiment_key, experiment_variant = promotion.experiment(msg, props)
    else:
        experiment_key = experiment_variant = None
    stored = props if mtype == "track" else promotion.stored_properties(mtype, msg, props, traits)
    currency = props.get("currency")  # upper-cased above when it is text
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
        "received_at": received_at,
        "properties": orjson.dumps(stored).decode(),
        "page": promotion.page(msg, props, context),
        "country": enrichment.country(ip),
        "device": agent.device,
        "revenue": revenue,
        "currency": None if currency is None else promotion.currency(props),
        "experiment_key": experiment_key,
        "experiment_variant": experiment_variant,
        "ip": ip,
        "user_agent": agent_text,
        "library": promotion.library(context),
        "is_bot": agent.is_bot,
    }


def _schema_field(mtype: str) -> str:
    return "traits" if mtype in _TRAITS_TYPES else "properties"


def content_id(original: dict[str, Any], tenant_id: str) -> str:
    """uuid5 of the tenant and the message content without sentAt, which a resend changes."""
    content = {k: val for k, val in original.items() if k != "sentAt"}
    text = orjson.dumps(content, option=orjson.OPT_SORT_KEYS).decode()
    return str(uuid.uuid5(CONTENT_ID_NAMESPACE, f"{tenant_id}\n{text}"))

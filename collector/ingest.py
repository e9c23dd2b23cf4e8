"""One ingest request: authenticate, limit, process, dedupe, produce — then answer."""

from __future__ import annotations

import base64
import binascii
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from analytics_core.catalogue import get_catalogue
from collector.adapters import PayloadError
from collector.dedupe import Claims
from collector.pipeline import RequestContext, process_messages
from collector.producer import KafkaUnavailable
from collector.state import CollectorState

Adapter = Callable[[Any], tuple[list[Any], "str | None"]]


@dataclass(frozen=True)
class Prepared:
    """A request ready to produce: records for both topics, dedupe claims to undo on failure, counts."""

    records: list[tuple[str, str, bytes]]
    claims: Claims
    received: int
    accepted: int
    bots: int
    dead_letter_reasons: Counter[str]


@dataclass
class IngestError(Exception):
    """An answer other than 200: status, message and optional Retry-After seconds."""

    status: int
    message: str
    retry_after: int | None = None


def key_from_basic_auth(header: str | None) -> str | None:
    """The write key sent as the Basic-auth user name (Segment SDKs), or None."""
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        user, _, _ = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise IngestError(401, "Authorization header is not valid Basic auth") from None
    return user or None


def refused_origin(origin: str) -> str:
    """The 403 message for a browser page whose origin the write key's tenant does not allow."""
    return (
        f"origin {origin} may not send events with this write key: add it to the tenant's allowed_origins "
        "(analytics tenants set TENANT --allowed-origins ...)"
    )


def _users(messages: list[Any]) -> list[str]:
    """The user (userId, else anonymousId, as text) of each message that names one, for the rate limit."""
    users = []
    for message in messages:
        if isinstance(message, dict):
            user = message.get("userId") or message.get("anonymousId")
            if user is not None:
                users.append(user if type(user) is str else str(user))
    return users


async def prepare(
    state: CollectorState,
    document: Any,
    adapter: Adapter,
    auth_header: str | None,
    peer_ip: str | None,
    origin: str | None = None,
) -> Prepared:
    """Authenticate, rate-limit, validate, enrich and dedupe one decoded body (CPU and Redis; no Kafka).

    `origin` is the Origin header of a browser's request: the tenant must allow it (its allowed_origins)."""
    try:
        messages, body_key = adapter(document)
    except PayloadError as exc:
        raise IngestError(400, str(exc)) from None
    key = key_from_basic_auth(auth_header) or body_key
    if not key:
        raise IngestError(401, "missing write key: send it as the Basic-auth user name or as writeKey in the body")
    tenant = state.keys.tenant_for_write_key(key)
    if tenant is None:
        blocked_for = await state.auth_throttle.failed(peer_ip)
        if blocked_for is not None:
            raise IngestError(429, state.auth_throttle.refusal(blocked_for, "write key"), blocked_for)
        raise IngestError(401, "unknown write key: check the key your SDK is configured with (keys are per tenant)")
    if origin is not None and not tenant.settings.allows_origin(origin):
        raise IngestError(403, refused_origin(origin))
    received_at = time.time_ns() // 1000
    bots = await _rate_limit(state, tenant, messages)
    ctx = RequestContext(
        tenant_id=tenant.tenant_id,
        received_at=received_at,
        connection_ip=peer_ip,
        allow_unknown_event_types=tenant.settings.allow_unknown_event_types,
        max_event_bytes=state.settings.collector_max_event_bytes,
        bounds=state.bounds,
        revenue_keys=get_catalogue().purchases.revenue_keys(tenant.tenant_id),
    )
    processed = process_messages(messages, ctx)
    events = processed.events
    if bots:
        events = [replace_bot(e) if (e["user_id"] or e["anonymous_id"]) in bots else e for e in events]
    events, claims = await _dedupe(state, tenant.tenant_id, events)
    topic, serialize = state.topics.events, state.serialize
    records = [(topic, f"{e['tenant_id']}:{e['user_id'] or e['anonymous_id']}", serialize(e)) for e in events]
    records += [(state.topics.events_dlq, tenant.tenant_id, d.to_json()) for d in processed.dead_letters]
    return Prepared(
        records=records,
        claims=claims,
        received=len(messages),
        accepted=len(events),
        bots=sum(1 for e in events if e["is_bot"]),
        dead_letter_reasons=Counter(d.reason for d in processed.dead_letters),
    )


async def produce(state: CollectorState, prepared: Prepared) -> None:
    """Send the records and wait for Kafka; on failure forget the dedupe claims so the SDK's retry counts."""
    try:
        seconds = await state.producer.send(prepared.records)
    except KafkaUnavailable as exc:
        await _release(state, prepared.claims)
        raise IngestError(503, str(exc), state.settings.collector_retry_after_s) from None
    m = state.metrics
    m.kafka_latency.observe(seconds)
    m.received.inc(prepared.received)
    m.accepted.inc(prepared.accepted)
    m.bots.inc(prepared.bots)
    for reason, count in prepared.dead_letter_reasons.items():
        m.dead_lettered.labels(reason).inc(count)


async def _release(state: CollectorState, claims: Claims) -> None:
    try:
        await state.dedupe.release(claims)
    except redis.RedisError as exc:
        state.redis_failed("dedupe", exc)


def replace_bot(event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "is_bot": True}


async def _rate_limit(state: CollectorState, tenant: Any, messages: list[Any]) -> set[str]:
    """Users over the human rate; raises IngestError(429) when the tenant is over its rate, 413 when the batch
    is larger than the tenant's burst (it would be refused for ever: an SDK resends a 429 as it is)."""
    users = Counter(_users(messages))
    cost, burst = sum(users.values()), tenant.settings.events_per_second_limit
    if cost > burst:  # checked with or without Redis: whether a batch fits must not depend on Redis' health
        raise IngestError(
            413,
            f"batch of {cost} events is larger than tenant {tenant.tenant_id}'s burst of {burst} events "
            f"(its events_per_second_limit), so it could never pass the rate limit: send at most {burst} "
            "events a request",
        )
    if not state.redis_usable():
        state.metrics.redis_unavailable.labels("ratelimit").inc()
        return set()
    try:
        verdict, bots = await state.limiter.check(
            tenant.tenant_id,
            dict(users),
            time.time_ns() // 1_000_000,
            tenant.settings.events_per_second_limit,
            tenant.settings.user_events_per_minute_limit,
        )
    except redis.RedisError as exc:
        state.redis_failed("ratelimit", exc)
        return set()
    if not verdict.allowed:
        raise IngestError(429, f"tenant {tenant.tenant_id} is over its rate limit", verdict.retry_after_s)
    return bots


async def _dedupe(
    state: CollectorState, tenant_id: str, events: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], Claims]:
    if not events:
        return events, Claims()
    if not state.redis_usable():
        state.metrics.redis_unavailable.labels("dedupe").inc()
        return events, Claims()
    try:
        fresh, claims = await state.dedupe.claim(tenant_id, events)
    except redis.RedisError as exc:
        state.redis_failed("dedupe", exc)
        return events, Claims()
    state.metrics.duplicates.inc(len(events) - len(fresh))
    return fresh, claims

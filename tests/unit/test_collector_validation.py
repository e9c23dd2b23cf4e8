"""Bad input: each broken message becomes one dead letter with the right reason and detail, never an exception."""

from __future__ import annotations

import json
from typing import Any

import pytest

from analytics_core.bounds import Bounds
from analytics_core.deadletter import REASONS, DeadLetter
from analytics_core.events import check_event
from collector import promotion
from collector.pipeline import RequestContext, process_messages
from collector.validation import MAX_DEPTH, MAX_KEYS, Rejected

RECEIVED = 1_704_110_400_000_000  # 2024-01-01T12:00:00Z
CTX = RequestContext("tenant_1", RECEIVED, "203.0.113.9")
STRICT = RequestContext("tenant_1", RECEIVED, None, allow_unknown_event_types=False)
GOOD = {
    "type": "track",
    "event": "checkout",
    "messageId": "m-good",
    "anonymousId": "anon-1",
    "timestamp": "2024-01-01T11:59:59Z",
    "properties": {"session_id": "s1"},
}
PURCHASE = {**GOOD, "event": "purchase", "properties": {"revenue": 45.0, "currency": "USD"}}
ORDER = {**GOOD, "event": "Order Completed", "properties": {"total": 45.0, "currency": "USD"}}
REMOVE = object()  # marks a key to delete from the base message


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def make(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    msg = {**base, **changes}
    return {k: v for k, v in msg.items() if v is not REMOVE}


def props(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return make(base, properties=make(base["properties"], **changes))


TOO_BIG = "Message: is"  # size details carry the byte count, checked by prefix
CASES: list[tuple[str, Any, str, str]] = [
    ("string message", "track", "format", "message: must be a JSON object"),
    ("list message", [GOOD], "format", "message: must be a JSON object"),
    ("null message", None, "format", "message: must be a JSON object"),
    ("number message", 42, "format", "message: must be a JSON object"),
    ("missing type", make(GOOD, type=REMOVE), "schema_violation", "type: is required"),
    ("numeric type", make(GOOD, type=5), "format", "type: must be a string"),
    (
        "unknown type",
        make(GOOD, type="purchase"),
        "schema_violation",
        "type: must be one of track, page, screen, identify, group, alias",
    ),
    ("missing event", make(GOOD, event=REMOVE), "schema_violation", "event: is required for a track message"),
    ("empty event", make(GOOD, event=""), "schema_violation", "event: is required for a track message"),
    ("numeric event", make(GOOD, event=42), "format", "event: must be a string"),
    ("long event", make(GOOD, event="e" * 201), "schema_violation", "event: must be at most 200 characters"),
    (
        "missing both ids",
        make(GOOD, anonymousId=REMOVE),
        "schema_violation",
        "userId/anonymousId: one of them is required",
    ),
    (
        "empty ids",
        make(GOOD, anonymousId="", userId=""),
        "schema_violation",
        "userId/anonymousId: one of them is required",
    ),
    ("list userId", make(GOOD, userId=["u"]), "format", "userId: must be a string"),
    ("object anonymousId", make(GOOD, anonymousId={"id": 1}), "format", "anonymousId: must be a string"),
    ("boolean userId", make(GOOD, userId=True), "format", "userId: must be a string"),
    ("long userId", make(GOOD, userId="u" * 256), "schema_violation", "userId: must be at most 255 characters"),
    ("numeric messageId", make(GOOD, messageId=123), "format", "messageId: must be a string"),
    ("list properties", make(GOOD, properties=[1, 2]), "format", "properties: must be a JSON object"),
    ("string properties", make(GOOD, properties="{}"), "format", "properties: must be a JSON object"),
    ("string context", make(GOOD, context="ctx"), "format", "context: must be a JSON object"),
    (
        "list traits",
        {"type": "identify", "userId": "u1", "traits": ["pro"]},
        "format",
        "traits: must be a JSON object",
    ),
    (
        "words timestamp",
        make(GOOD, timestamp="yesterday"),
        "format",
        "timestamp: is not a valid ISO-8601 timestamp ('yesterday')",
    ),
    ("numeric timestamp", make(GOOD, timestamp=1704067200), "format", "timestamp: must be an ISO-8601 string"),
    (
        "month 13",
        make(GOOD, timestamp="2024-13-01T00:00:00Z"),
        "format",
        "timestamp: is not a valid ISO-8601 timestamp ('2024-13-01T00:00:00Z')",
    ),
    ("bad sentAt", make(GOOD, sentAt="soon"), "format", "sentAt: is not a valid ISO-8601 timestamp ('soon')"),
    (
        "bad originalTimestamp",
        make(GOOD, timestamp=REMOVE, originalTimestamp="01/02/2024"),
        "format",
        "originalTimestamp: is not a valid ISO-8601 timestamp ('01/02/2024')",
    ),
    (
        "400 days ahead",
        make(GOOD, timestamp="2025-02-04T12:00:00Z"),
        "enrichment_failure",
        "timestamp: more than 24 h after receivedAt",
    ),
    (
        "25 h ahead",
        make(GOOD, timestamp="2024-01-02T13:00:00Z"),
        "enrichment_failure",
        "timestamp: more than 24 h after receivedAt",
    ),
    (
        "future despite a correct sentAt",
        make(GOOD, timestamp="2025-02-04T12:00:00Z", sentAt="2024-01-01T12:00:00Z"),
        "enrichment_failure",
        "timestamp: more than 24 h after receivedAt",
    ),
    (
        "negative revenue",
        props(PURCHASE, revenue=-19.99),
        "schema_violation",
        "properties.revenue: must be a number >= 0",
    ),
    (
        "text revenue",
        props(PURCHASE, revenue="19,99"),
        "schema_violation",
        "properties.revenue: must be a number >= 0",
    ),
    ("boolean revenue", props(PURCHASE, revenue=True), "schema_violation", "properties.revenue: must be a number >= 0"),
    ("missing revenue", props(PURCHASE, revenue=REMOVE), "schema_violation", "properties.revenue: is required"),
    (
        "NaN revenue",
        props(PURCHASE, revenue=float("nan")),
        "out_of_range",
        "properties.revenue: must be a finite number",
    ),
    (
        "infinite revenue on a custom event",
        props(GOOD, revenue=float("inf")),
        "out_of_range",
        "properties.revenue: must be a finite number",
    ),
    (
        "revenue 1e308",
        props(PURCHASE, revenue=1e308),
        "out_of_range",
        "properties.revenue: must be between -1000000000 and 1000000000 (bounds_max_abs_revenue)",
    ),
    (
        "revenue 9.3e18 as an integer",
        props(PURCHASE, revenue=9_300_000_000_000_000_000),
        "out_of_range",
        "properties.revenue: must be between -1000000000 and 1000000000 (bounds_max_abs_revenue)",
    ),
    (
        "refund below minus the bound on a custom event",
        props(GOOD, revenue=-1_000_000_000.5),
        "out_of_range",
        "properties.revenue: must be between -1000000000 and 1000000000 (bounds_max_abs_revenue)",
    ),
    (
        "year 0001 without sentAt",
        make(GOOD, timestamp="0001-01-01T00:00:00Z"),
        "out_of_range",
        "timestamp: more than 366 days before receivedAt (bounds_max_event_age_days)",
    ),
    (
        "year 0001 with sentAt 9999 (skew-corrected to about year -7972)",
        make(GOOD, timestamp="0001-01-01T00:00:00Z", sentAt="9999-12-31T23:59:59Z"),
        "out_of_range",
        "timestamp: more than 366 days before receivedAt (bounds_max_event_age_days)",
    ),
    (
        "sentAt 9999 skews a good time into the far past",
        make(GOOD, timestamp="2024-01-01T11:59:59Z", sentAt="9999-12-31T23:59:59Z"),
        "out_of_range",
        "timestamp: more than 366 days before receivedAt (bounds_max_event_age_days)",
    ),
    (
        "a clock consistently in year 0001: the event time is fine, the client's is not",
        make(GOOD, timestamp="0001-01-01T00:00:00Z", sentAt="0001-01-01T00:00:01Z"),
        "out_of_range",
        "timestamp: must be between 1900-01-01 and 2200-01-01 UTC",
    ),
    (
        "originalTimestamp in 1899 by a clock a second off",
        make(GOOD, timestamp=REMOVE, originalTimestamp="1899-12-31T23:59:59Z", sentAt="1900-01-01T00:00:00Z"),
        "out_of_range",
        "originalTimestamp: must be between 1900-01-01 and 2200-01-01 UTC",
    ),
    (
        "sentAt at 2200 by a clock in the 23rd century",
        make(GOOD, timestamp="2199-12-31T23:59:59Z", sentAt="2200-01-01T00:00:00Z"),
        "out_of_range",
        "sentAt: must be between 1900-01-01 and 2200-01-01 UTC",
    ),
    (
        "year 2999 without sentAt stays an enrichment failure",
        make(GOOD, timestamp="2999-01-01T00:00:00Z"),
        "enrichment_failure",
        "timestamp: more than 24 h after receivedAt",
    ),
    (
        "366 days and a second old",
        make(GOOD, timestamp="2022-12-31T11:59:59Z"),
        "out_of_range",
        "timestamp: more than 366 days before receivedAt (bounds_max_event_age_days)",
    ),
    (
        "skew correction lands 200 years back",
        make(GOOD, timestamp="1950-01-01T00:00:00Z", sentAt="2150-01-01T00:00:00Z"),
        "out_of_range",
        "timestamp: more than 366 days before receivedAt (bounds_max_event_age_days)",
    ),
    (
        "currency not three letters",
        props(PURCHASE, currency="usdollar"),
        "schema_violation",
        "properties.currency: must be a 3-letter ISO 4217 code in capitals",
    ),
    (
        "four-letter currency",
        props(PURCHASE, currency="EURO"),
        "schema_violation",
        "properties.currency: must be a 3-letter ISO 4217 code in capitals",
    ),
    ("missing currency", props(PURCHASE, currency=REMOVE), "schema_violation", "properties.currency: is required"),
    (
        "order without amount",
        props(ORDER, total=REMOVE),
        "schema_violation",
        "properties: needs one of: revenue, total",
    ),
    ("negative order total", props(ORDER, total=-5), "schema_violation", "properties.total: must be a number >= 0"),
    (
        "order products not objects",
        props(ORDER, products=[{"sku": "a"}, 3]),
        "schema_violation",
        "properties.products[1]: must be object",
    ),
    (
        "cart without product",
        make(GOOD, event="add_to_cart", properties={"price": 3.5}),
        "schema_violation",
        "properties.product_id: is required",
    ),
    (
        "page path not text",
        {"type": "page", "userId": "u1", "properties": {"path": 7}},
        "schema_violation",
        "properties.path: must be a string",
    ),
    ("oversized event", props(GOOD, blob="x" * 40_000), "size", TOO_BIG),
    ("huge property map over the size", props(GOOD, **{f"key_{i:05d}": i for i in range(3000)}), "size", TOO_BIG),
    (
        "huge property map",
        make(GOOD, properties={f"k{i}": 0 for i in range(MAX_KEYS + 1)}),
        "schema_violation",
        f"properties: has {MAX_KEYS + 1} keys, more than the {MAX_KEYS} allowed",
    ),
    (
        "properties nested 40 levels",
        props(GOOD, deep=nested(40)),
        "schema_violation",
        f"properties: is nested deeper than {MAX_DEPTH} levels",
    ),
    (
        "one level too deep",
        props(GOOD, deep=nested(MAX_DEPTH - 1)),
        "schema_violation",
        f"properties: is nested deeper than {MAX_DEPTH} levels",
    ),
    (
        "properties nested 300 levels",
        props(GOOD, deep=nested(300)),
        "schema_violation",
        f"properties: is nested deeper than {MAX_DEPTH} levels",
    ),
    (
        "lone surrogate in a property",
        props(GOOD, name="caf\udce9"),
        "format",
        "properties.name: is not valid UTF-8 text (lone surrogate)",
    ),
    (
        "lone surrogate in a key",
        props(GOOD, **{"\ud800k": 1}),
        "format",
        "properties.'\\ud800k': is not valid UTF-8 text (lone surrogate)",
    ),
    (
        "lone surrogate in the event",
        make(GOOD, event="buy\udfff"),
        "format",
        "event: is not valid UTF-8 text (lone surrogate)",
    ),
    (
        "integer beyond 64 bits",
        props(GOOD, count=2**70),
        "format",
        "message: is not serialisable as JSON (Integer exceeds 64-bit range)",
    ),
    (
        "alias without previousId",
        {"type": "alias", "userId": "u1"},
        "schema_violation",
        "previousId: is required for an alias message",
    ),
    (
        "group without groupId",
        {"type": "group", "userId": "u1"},
        "schema_violation",
        "groupId: is required for a group message",
    ),
]


@pytest.mark.parametrize(("bad", "reason", "detail"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_message_becomes_one_typed_dead_letter(bad: Any, reason: str, detail: str) -> None:
    out = process_messages([GOOD, bad, PURCHASE], CTX)
    assert len(out.events) == 2 and len(out.dead_letters) == 1  # counts add up: 3 in, 2 + 1 out
    dead = out.dead_letters[0]
    assert dead.reason == reason and reason in REASONS
    if detail == TOO_BIG:
        assert dead.detail.startswith("message: is ") and dead.detail.endswith("more than the 32768 allowed")
    else:
        assert dead.detail == detail
    assert dead.payload is bad
    assert (dead.source, dead.tenant_id, dead.received_at) == ("collector", "tenant_1", RECEIVED)
    assert json.loads(dead.to_json())["reason"] == reason  # the DLQ record serialises even with broken text
    for event in out.events:
        check_event(event)


def test_unknown_event_type_is_rejected_only_when_the_tenant_says_so() -> None:
    signup = make(GOOD, event="signup")
    assert len(process_messages([signup], CTX).events) == 1
    out = process_messages([GOOD, signup, PURCHASE, {"type": "identify", "userId": "u1"}], STRICT)
    assert [e["event_type"] for e in out.events] == ["checkout", "purchase", "identify"]
    assert [(d.reason, d.detail) for d in out.dead_letters] == [
        ("unknown_event_type", "event: 'signup' has no schema for this tenant")
    ]


def test_size_limit_follows_the_request_context() -> None:
    small = RequestContext("tenant_1", RECEIVED, None, max_event_bytes=200)
    out = process_messages([GOOD, props(GOOD, note="n" * 200)], small)
    assert len(out.events) == 1 and out.dead_letters[0].reason == "size"
    assert out.dead_letters[0].detail.endswith("more than the 200 allowed")


@pytest.mark.parametrize(
    "ok",
    [
        make(GOOD, integrations={"All": True}, options={"x": 1}, channel="server", version=2),  # unknown keys
        make(GOOD, userId=42),  # numeric ids are text in the event
        make(GOOD, properties=None, context=None),  # null objects are empty
        make(GOOD, timestamp="2024-01-02T11:00:00Z"),  # 23 h ahead is a skewed clock, not a broken one
        make(GOOD, timestamp="2024-01-01T11:00:00"),  # no offset: UTC
        make(GOOD, timestamp=REMOVE, messageId=REMOVE),
        props(GOOD, deep=nested(MAX_DEPTH - 2)),  # message → properties → deep…: exactly 32 levels
        make(GOOD, properties={f"k{i}": 0 for i in range(MAX_KEYS)}),
        props(PURCHASE, revenue=0),
        props(GOOD, revenue="12.50"),  # not promoted, kept in properties: only schema'd events are strict
    ],
)
def test_edge_cases_that_are_accepted(ok: dict[str, Any]) -> None:
    out = process_messages([ok], CTX)
    assert out.dead_letters == []
    check_event(out.events[0])


def test_every_reason_is_covered() -> None:
    assert {c[2] for c in CASES} | {"unknown_event_type"} == set(REASONS)
    assert len(CASES) >= 40


def test_dead_letter_round_trips_through_json() -> None:
    dead = process_messages([make(GOOD, event=REMOVE)], CTX).dead_letters[0]
    assert DeadLetter.from_json(dead.to_json()) == dead


def test_timestamps_are_exact_microseconds_and_the_sent_at_cache_is_only_a_cache() -> None:
    from collector.validation import Rejected, timestamp

    texts = ["2024-01-01T00:00:00Z", "2024-01-01T01:00:00.000001+01:00", "0001-01-01T00:00:00", "1969-12-31T23:59:59.5"]
    expected = [1_704_067_200_000_000, 1_704_067_200_000_001, -62_135_596_800_000_000, -500_000]
    assert [timestamp(t, "timestamp") for t in texts] == expected
    sequence = [0, 0, 1, 0, 2, 2, 3, 1]  # repeats, alternations: the cache keeps only the last sentAt
    assert [timestamp(texts[i], "sentAt", repeated=True) for i in sequence] == [expected[i] for i in sequence]
    with pytest.raises(Rejected, match="sentAt: is not a valid ISO-8601 timestamp"):
        timestamp("2024-13-01T00:00:00Z", "sentAt", repeated=True)
    assert timestamp(texts[3], "sentAt", repeated=True) == expected[3]


def test_values_at_the_bounds_are_accepted_and_narrower_bounds_apply() -> None:
    """Exactly at each bound is fine; a context with other bounds (from other settings) uses them."""
    at_bounds = [
        props(PURCHASE, revenue=1_000_000_000),
        props(GOOD, revenue=-1_000_000_000.0),
        make(GOOD, timestamp="2022-12-31T12:00:00Z"),  # 366 days before receipt
        make(GOOD, timestamp="2024-01-02T12:00:00Z"),  # 24 h after
        make(GOOD, timestamp="1900-01-01T00:00:00Z", sentAt="1900-01-01T00:00:01Z"),  # a clock in 1900, corrected
    ]
    out = process_messages(at_bounds, CTX)
    assert not out.dead_letters and len(out.events) == len(at_bounds)
    assert out.events[-1]["timestamp"] == RECEIVED - 1_000_000
    narrow = RequestContext("tenant_1", RECEIVED, None, bounds=Bounds(100.0, 3_600_000_000, 60_000_000))
    out = process_messages([props(PURCHASE, revenue=100.5), make(GOOD, timestamp="2024-01-01T10:59:59Z"),
                            make(GOOD, timestamp="2024-01-01T12:01:01Z"), GOOD], narrow)  # fmt: skip
    assert [(d.reason, d.detail) for d in out.dead_letters] == [
        ("out_of_range", "properties.revenue: must be between -100 and 100 (bounds_max_abs_revenue)"),
        ("out_of_range", "timestamp: more than 1 h before receivedAt (bounds_max_event_age_days)"),
        ("enrichment_failure", "timestamp: more than 60 s after receivedAt"),
    ]
    assert len(out.events) == 1


def test_revenue_promotion_rejects_integers_beyond_a_double() -> None:
    with pytest.raises(Rejected) as err:
        promotion.revenue({"total": 10**400})
    assert (err.value.reason, err.value.detail) == ("out_of_range", "properties.total: must be a finite number")
    assert promotion.revenue({"revenue": -(10**9)}) == -1e9

"""The whole pipeline: generator traffic in Segment shape comes out as the generator's canonical events."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest

from analytics_core.events import FIELD_NAMES, check_event
from collector.adapters import segment_batch
from collector.pipeline import RequestContext, content_id, process_messages
from generator.block import INVALID_REASONS
from generator.config import GeneratorConfig
from generator.run import run
from generator.segment import iso, to_segment
from generator.sinks import MemorySink

START_US = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z
RECEIVED = 1_704_110_400_000_000  # 2024-01-01T12:00:00Z
CTX = RequestContext("tenant_1", RECEIVED, "203.0.113.9")
# What the collector can know of a generator event from its Segment message (all of it, in fact).
COMPARED = tuple(f for f in FIELD_NAMES if f not in ("timestamp", "properties"))
Records = list[tuple[dict[str, Any], str | None]]


@pytest.fixture(scope="module")
def records() -> Records:
    sink = MemorySink()
    run(GeneratorConfig(start_us=START_US, seed=11, days=1, events_per_day=5_000, invalid_share=0.03), sink)
    return sink.records


@pytest.mark.parametrize("client_clock", [True, False], ids=["live-skewed-clocks", "backfill-batch-sentAt"])
def test_generator_messages_become_the_generators_canonical_events(records: Records, client_clock: bool) -> None:
    kinds: Counter[str] = Counter()
    for expected, invalid in records:
        msg = to_segment(expected, client_clock=client_clock)
        # Backfill: the batch sentAt is the send time, which the generator makes the receipt time.
        body = {"batch": [msg], "sentAt": iso(expected["received_at"])}
        ctx = RequestContext(expected["tenant_id"], expected["received_at"], None)
        out = process_messages(segment_batch(body)[0], ctx)
        assert len(out.events) + len(out.dead_letters) == 1
        if invalid is not None:
            assert [d.reason for d in out.dead_letters] == [INVALID_REASONS[invalid]], invalid
            assert out.dead_letters[0].payload is msg
            kinds[invalid] += 1
            continue
        assert out.dead_letters == [], out.dead_letters
        event = out.events[0]
        check_event(event)
        if not client_clock:  # backfill messages carry no sentAt and the true time as their timestamp
            expected = {**expected, "original_timestamp": expected["timestamp"], "sent_at": expected["received_at"]}
        assert {f: event[f] for f in COMPARED} == {f: expected[f] for f in COMPARED}
        assert abs(event["timestamp"] - expected["timestamp"]) <= 1_000
        assert orjson.loads(event["properties"]) == orjson.loads(expected["properties"])
    assert set(kinds) == set(INVALID_REASONS)  # every invalid kind was seen and dead-lettered as documented


def test_generator_batches_of_100_add_up(records: Records) -> None:
    messages = [to_segment(e, client_clock=True) for e, _ in records]
    events, reasons = 0, Counter[str]()
    for i in range(0, len(messages), 100):
        batch, _ = segment_batch({"batch": messages[i : i + 100], "sentAt": iso(RECEIVED)})
        out = process_messages(batch, CTX)
        assert len(out.events) + len(out.dead_letters) == len(batch)
        assert [e["event_id"] for e in out.events] == [
            m["messageId"] for m in messages[i : i + 100] if not any(d.payload is m for d in out.dead_letters)
        ]  # input order kept
        events += len(out.events)
        reasons.update(d.reason for d in out.dead_letters)
    expected = Counter(INVALID_REASONS[k] for _, k in records if k is not None)
    # Sent at a fixed time, timestamps move but none goes beyond the 24 h limit except the broken clocks.
    assert reasons == expected
    assert events == sum(1 for _, k in records if k is None)


def test_message_types_map_to_event_types_and_properties() -> None:
    base = {"userId": "u1", "timestamp": "2024-01-01T11:00:00Z"}
    messages = [
        {**base, "type": "page", "name": "Home", "properties": {"url": "https://shop.example/home?x=1"}},
        {**base, "type": "screen", "name": "Settings"},
        {**base, "type": "identify", "traits": {"plan": "pro"}},
        {**base, "type": "group", "groupId": "org-7", "traits": {"seats": 5}},
        {**base, "type": "alias", "previousId": "anon-9"},
        {**base, "type": "track", "event": "Order Completed", "properties": {"total": 30, "currency": "EUR"}},
    ]
    out = process_messages(messages, CTX)
    assert out.dead_letters == []
    got = [(e["message_type"], e["event_type"], e["page"], orjson.loads(e["properties"])) for e in out.events]
    assert got == [
        ("page", "page_view", "/home", {"url": "https://shop.example/home?x=1", "name": "Home"}),
        ("screen", "screen_view", "Settings", {"name": "Settings"}),
        ("identify", "identify", None, {"traits": {"plan": "pro"}}),
        ("group", "group", None, {"group_id": "org-7", "traits": {"seats": 5}}),
        ("alias", "alias", None, {"previous_id": "anon-9"}),
        ("track", "Order Completed", None, {"total": 30, "currency": "EUR"}),
    ]
    assert (out.events[-1]["revenue"], out.events[-1]["currency"]) == (30.0, "EUR")


def test_promoted_columns() -> None:
    msg = {
        "type": "track",
        "event": "add_to_cart",
        "anonymousId": "a1",
        "properties": {"product_id": "sku-1", "price": 3.5, "currency": "eur", "path": "/p/1"},
        "context": {
            "ip": "81.2.69.142",
            "userAgent": "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15",
            "library": {"name": "analytics-ios", "version": "4.1.8"},
        },
    }
    event = process_messages([msg], CTX).events[0]
    assert (event["page"], event["currency"], event["revenue"]) == ("/p/1", "EUR", None)
    assert (event["ip"], event["country"], event["device"], event["is_bot"]) == ("81.2.69.142", "GB", "tablet", False)
    assert event["library"] == "analytics-ios/4.1.8"
    assert (event["timestamp"], event["original_timestamp"], event["sent_at"]) == (RECEIVED, None, None)
    bare = process_messages([{"type": "track", "event": "x", "userId": "u"}], CTX).events[0]
    assert (bare["ip"], bare["country"], bare["user_agent"], bare["device"], bare["library"]) == (
        "203.0.113.9",  # the TCP peer when the SDK sends no ip
        None,
        None,
        None,
        None,
    )


def test_missing_message_id_gets_a_stable_content_id() -> None:
    msg = {"type": "track", "event": "x", "userId": "u", "timestamp": "2024-01-01T11:00:00Z"}
    first = process_messages([{**msg, "sentAt": "2024-01-01T11:00:01Z"}], CTX).events[0]["event_id"]
    resend = process_messages([{**msg, "sentAt": "2024-01-01T11:05:00Z"}], CTX).events[0]["event_id"]
    assert first == resend == content_id(msg, "tenant_1")
    assert content_id(msg, "tenant_2") != first
    assert content_id({**msg, "event": "y"}, "tenant_1") != first


def test_batch_sent_at_corrects_skew_and_message_sent_at_wins() -> None:
    clock_fast = {"type": "track", "event": "x", "userId": "u", "timestamp": "2024-01-01T12:10:00Z"}
    body = {"batch": [clock_fast, {**clock_fast, "sentAt": "2024-01-01T12:10:02Z"}], "sentAt": "2024-01-01T12:10:01Z"}
    first, second = process_messages(segment_batch(body)[0], CTX).events
    assert first["timestamp"] == RECEIVED - 1_000_000 and first["sent_at"] == RECEIVED + 601_000_000
    assert second["timestamp"] == RECEIVED - 2_000_000
    assert first["original_timestamp"] == RECEIVED + 600_000_000


def test_messages_are_not_mutated() -> None:
    msg = {"type": "page", "name": "Home", "userId": "u", "properties": {"path": "/"}, "context": {}}
    snapshot = orjson.dumps(msg)
    process_messages(segment_batch({"batch": [msg], "sentAt": "2024-01-01T12:00:00Z"})[0], CTX)
    assert orjson.dumps(msg) == snapshot


def test_an_unexpected_error_dead_letters_the_message_not_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    from collector import promotion

    def broken(context: dict[str, Any]) -> str | None:
        raise RuntimeError("bug")

    monkeypatch.setattr(promotion, "library", broken)
    out = process_messages([{"type": "track", "event": "x", "userId": "u"}], CTX)
    assert out.events == []
    assert [(d.reason, d.detail) for d in out.dead_letters] == [
        ("format", "message: could not be processed (RuntimeError: bug)")
    ]


def test_hand_built_messages_with_a_bogus_original_key_still_work() -> None:
    out = process_messages([{"type": "track", "event": "x", "userId": "u", "_original": "junk"}], CTX)
    assert len(out.events) == 1


@pytest.mark.parametrize("event", ["purchase", "Order Completed"])
def test_a_lower_case_currency_is_accepted_and_stored_upper_case(event: str) -> None:
    msg = {"type": "track", "event": event, "userId": "u1", "properties": {"revenue": 9.5, "currency": "usd"}}
    out = process_messages([msg], CTX)
    assert out.dead_letters == []
    (stored,) = out.events
    assert (stored["currency"], orjson.loads(stored["properties"])["currency"], stored["revenue"]) == (
        "USD",
        "USD",
        9.5,
    )
    assert msg["properties"] == {"revenue": 9.5, "currency": "usd"}  # the message itself is not changed


def test_revenue_comes_from_the_tenants_revenue_properties_in_order() -> None:
    props = {"amount": 12.0, "revenue": 3.0, "total": 4.0}
    msg = {"type": "track", "event": "checkout_done", "userId": "u1", "properties": props}
    default = process_messages([msg], CTX).events[0]
    own = process_messages([msg], RequestContext("tenant_1", RECEIVED, None, revenue_keys=("amount", "revenue")))
    total_only = process_messages(
        [{**msg, "properties": {"total": 4.0}}], RequestContext("tenant_1", RECEIVED, None, revenue_keys=("amount",))
    )
    assert (default["revenue"], own.events[0]["revenue"], total_only.events[0]["revenue"]) == (3.0, 12.0, None)

"""Protocol adapters: Segment batch and single-message bodies, PostHog batches, and whole-body errors."""

from __future__ import annotations

from typing import Any

import pytest

from collector.adapters import (
    BATCH_SENT_AT,
    EXPERIMENT,
    ORIGINAL,
    PayloadError,
    posthog_batch,
    segment_batch,
    segment_single,
)
from collector.pipeline import RequestContext, process_messages

RECEIVED = 1_704_110_400_000_000  # 2024-01-01T12:00:00Z
CTX = RequestContext("tenant_1", RECEIVED, "203.0.113.9")


def track(**extra: Any) -> dict[str, Any]:
    return {"type": "track", "event": "checkout", "anonymousId": "anon-1", **extra}


def test_segment_batch_returns_messages_and_write_key_from_body() -> None:
    body = {"batch": [track(), track(userId="u1")], "writeKey": "wk_live", "sentAt": "2024-01-01T12:00:00Z"}
    messages, key = segment_batch(body)
    assert key == "wk_live"
    assert len(messages) == 2
    assert messages[0][BATCH_SENT_AT] == "2024-01-01T12:00:00Z"
    assert messages[0][ORIGINAL] is body["batch"][0]  # the original stays untouched for dead letters
    assert BATCH_SENT_AT not in body["batch"][0]


def test_segment_batch_without_write_key_or_sent_at_passes_messages_through() -> None:
    body = {"batch": [track(), "not an object", 7]}
    messages, key = segment_batch(body)
    assert key is None
    assert messages[0] is body["batch"][0]
    assert messages[1:] == ["not an object", 7]


def test_message_sent_at_wins_over_the_batch_one() -> None:
    messages, _ = segment_batch({"batch": [track(sentAt="2024-01-01T11:00:00Z")], "sentAt": "2024-01-01T12:00:00Z"})
    assert BATCH_SENT_AT not in messages[0]


def test_batch_context_is_merged_under_the_message_context() -> None:
    body = {
        "batch": [track(context={"ip": "8.8.8.8"}), track()],
        "context": {"ip": "1.1.1.1", "library": {"name": "analytics-python", "version": "2.3"}},
    }
    messages, _ = segment_batch(body)
    assert messages[0]["context"] == {"ip": "8.8.8.8", "library": {"name": "analytics-python", "version": "2.3"}}
    assert messages[1]["context"]["ip"] == "1.1.1.1"


def test_client_cannot_spoof_private_keys() -> None:
    spoofed = track(_original={"fake": True}, _batchSentAt="2030-01-01T00:00:00Z")
    messages, _ = segment_batch({"batch": [spoofed]})
    assert messages[0][ORIGINAL] is spoofed
    assert BATCH_SENT_AT not in messages[0]


@pytest.mark.parametrize("mtype", ["track", "page", "screen", "identify", "group", "alias"])
def test_segment_single_takes_the_type_from_the_path_when_missing(mtype: str) -> None:
    body = {"userId": "u1", "writeKey": "wk"}
    messages, key = segment_single(mtype, body)
    assert key == "wk"
    assert messages[0]["type"] == mtype
    assert messages[0][ORIGINAL] is body


def test_segment_single_keeps_a_type_given_in_the_body() -> None:
    body = track()
    messages, key = segment_single("track", body)
    assert messages == [body] and key is None


def test_posthog_batch_maps_events_to_segment_shape() -> None:
    body = {
        "api_key": "phc_key",
        "sent_at": "2024-01-01T12:00:00.500000+00:00",
        "batch": [
            {
                "event": "$pageview",
                "distinct_id": "user-1",
                "uuid": "0190c3e4-0000-7000-8000-000000000001",
                "timestamp": "2024-01-01T12:00:00+00:00",
                "properties": {
                    "$ip": "8.8.8.8",
                    "$lib": "web",
                    "$lib_version": "1.130.0",
                    "$current_url": "https://shop.example/cart?x=1",
                    "$raw_user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)",
                },
            },
            {"event": "$identify", "distinct_id": "user-1", "properties": {"$set": {"plan": "pro"}}},
            {
                "event": "checkout",
                "distinct_id": "user-1",
                "properties": {"$feature/checkout_button": "treatment", "$feature/dark_mode": True},
            },
        ],
    }
    messages, key = posthog_batch(body)
    assert key == "phc_key"
    page, identify, checkout = messages
    assert page["type"] == "page" and page["userId"] == "user-1"
    assert page["messageId"] == "0190c3e4-0000-7000-8000-000000000001"
    assert page["context"] == {
        "ip": "8.8.8.8",
        "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)",
        "library": {"name": "web", "version": "1.130.0"},
        "page": {"path": "/cart"},
    }
    assert page[BATCH_SENT_AT] == body["sent_at"] and page[ORIGINAL] is body["batch"][0]
    assert identify["type"] == "identify" and identify["traits"] == {"plan": "pro"}
    assert checkout["type"] == "track" and checkout["event"] == "checkout"
    assert checkout[EXPERIMENT] == ("checkout_button", "treatment")


def test_posthog_events_become_canonical_events() -> None:
    body = {
        "api_key": "phc",
        "batch": [
            {
                "event": "$pageview",
                "distinct_id": "u1",
                "uuid": "u-1",
                "timestamp": "2024-01-01T11:59:59Z",
                "properties": {"$ip": "8.8.8.8", "$lib": "posthog-python", "$lib_version": "3.0", "$pathname": "/"},
            },
            {"event": "purchase", "distinct_id": "u1", "properties": {"revenue": 12.5, "currency": "EUR"}},
        ],
    }
    out = process_messages(posthog_batch(body)[0], CTX)
    assert out.dead_letters == []
    view, purchase = out.events
    assert (view["event_type"], view["message_type"], view["event_id"]) == ("page_view", "page", "u-1")
    assert (view["page"], view["country"], view["library"]) == ("/", "US", "posthog-python/3.0")
    assert view["timestamp"] == RECEIVED - 1_000_000
    assert (purchase["revenue"], purchase["currency"], purchase["ip"]) == (12.5, "EUR", "203.0.113.9")


def test_posthog_dead_letter_keeps_the_posthog_event() -> None:
    event = {"event": "purchase", "distinct_id": "u1", "properties": {"revenue": -1, "currency": "EUR"}}
    out = process_messages(posthog_batch({"batch": [event]})[0], CTX)
    assert out.events == []
    assert out.dead_letters[0].payload is event
    assert out.dead_letters[0].detail == "properties.revenue: must be a number >= 0"


@pytest.mark.parametrize(
    ("adapter", "body", "detail"),
    [
        (segment_batch, [track()], "body: must be a JSON object"),
        (segment_batch, "text", "body: must be a JSON object"),
        (segment_batch, None, "body: must be a JSON object"),
        (segment_batch, {"messages": []}, "batch: is required"),
        (segment_batch, {"batch": {"type": "track"}}, "batch: must be a list"),
        (segment_batch, {"batch": "x"}, "batch: must be a list"),
        (posthog_batch, [], "body: must be a JSON object"),
        (posthog_batch, {"api_key": "k"}, "batch: is required"),
        (posthog_batch, {"batch": 3}, "batch: must be a list"),
        (lambda body: segment_single("track", body), [track()], "body: must be a JSON object"),
        (
            lambda body: segment_single("purchase", body),
            track(),
            "type: must be one of track, page, screen, identify, group, alias",
        ),
    ],
)
def test_unusable_bodies_raise_payload_error(adapter: Any, body: Any, detail: str) -> None:
    with pytest.raises(PayloadError) as err:
        adapter(body)
    assert str(err.value) == detail
    assert err.value.field == detail.split(":")[0]


def test_empty_batch_is_fine() -> None:
    assert segment_batch({"batch": []}) == ([], None)
    assert process_messages([], CTX).events == []


def test_batch_context_with_broken_text_is_a_payload_error() -> None:
    with pytest.raises(PayloadError) as err:
        segment_batch({"batch": [track()], "context": {"userAgent": "bad\udc80"}})
    assert err.value.field == "context"


def test_posthog_identify_traits_from_properties_or_the_top_of_the_event() -> None:
    """posthog-js and posthog-node send $set in properties; posthog-go sends it beside them."""
    body = {
        "api_key": "phc",
        "batch": [
            {"event": "$identify", "distinct_id": "u1", "properties": {"$set": {"plan": "pro"}}},
            {"event": "$identify", "distinct_id": "u2", "$set": {"plan": "team"}, "properties": {}},
            {"event": "$identify", "distinct_id": "u3", "$set": "not an object", "properties": {}},
        ],
    }
    messages, _ = posthog_batch(body)
    assert [m.get("traits") for m in messages] == [{"plan": "pro"}, {"plan": "team"}, None]

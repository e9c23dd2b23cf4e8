"""Mixpanel, Amplitude and Snowplow adapters: decoding, the mapping of every field, keys, answers, dead letters."""

from __future__ import annotations

import base64
import json
from collections import Counter
from typing import Any

import orjson
import pytest
from fastapi import Request
from fastapi.testclient import TestClient

from analytics_core.deadletter import DeadLetter
from analytics_core.settings import Settings
from collector.adapters import ORIGINAL, PayloadError
from collector.app import create_app
from collector.body import BodyError
from collector.dedupe import Claims
from collector.ingest import Prepared
from collector.pipeline import RequestContext, process_messages
from collector.protocols import PIXEL, amplitude, base64_json, epoch_time, mixpanel, profile_traits, snowplow
from tenants.models import TenantSettings

RECEIVED = 1_768_471_260_000_000  # 2026-01-15T10:01:00Z
CTX = RequestContext("tenant_1", RECEIVED, "203.0.113.9")
T_S, T_MS = 1_768_471_200, 1_768_471_200_000  # 2026-01-15T10:00:00Z
ISO = "2026-01-15T10:00:00+00:00"
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
DLQ = "tracking.events_dlq"


def request(
    query: str = "", headers: dict[str, str] | None = None, method: str = "POST", path: str = "/track"
) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {"type": "http", "method": method, "path": path, "query_string": query.encode(), "headers": raw}
    return Request(scope)


def b64(value: Any) -> str:
    return base64.b64encode(orjson.dumps(value)).decode()


def canonical(messages: list[Any]) -> tuple[list[dict[str, Any]], list[DeadLetter]]:
    out = process_messages(messages, CTX)
    assert len(out.events) + len(out.dead_letters) == len(messages)
    return out.events, out.dead_letters


def prepared(received: int, dead: list[DeadLetter]) -> Prepared:
    records = [("tracking.events", "k", b"\x00avro")] * (received - len(dead))
    records += [(DLQ, "tenant_1", d.to_json()) for d in dead]
    reasons = Counter(d.reason for d in dead)
    return Prepared(records, Claims(), received, received - len(dead), 0, reasons)


# --- shared ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (T_S, "auto", ISO),
        (T_MS, "auto", ISO),
        (T_S + 0.25, "auto", "2026-01-15T10:00:00.250000+00:00"),
        (str(T_MS), "ms", ISO),
        (T_MS + 7, "ms", "2026-01-15T10:00:00.007000+00:00"),
        ("yesterday", "auto", "yesterday"),  # as sent: the pipeline dead-letters it with its rule
        (True, "auto", True),
        (float("nan"), "auto", float("nan")),
        (10**30, "ms", 10**30),  # beyond any datetime: as sent
    ],
)
def test_epoch_time_is_iso_text_or_the_value_as_sent(value: Any, unit: str, expected: Any) -> None:
    result = epoch_time(value, unit)
    assert result == expected or (result != result and expected != expected)  # NaN is NaN


def test_base64_json_takes_standard_and_url_safe_padded_or_not() -> None:
    document = {"a": "?>~~~", "b": [1, 2]}
    raw = orjson.dumps(document)
    for text in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("=")):
        assert base64_json(text) == document
    with pytest.raises(ValueError):
        base64_json("not base64 at all!")


def test_profile_traits_merge_sets_and_keep_other_operations_whole() -> None:
    update = {"$set_once": {"a": 1, "b": 1}, "$set": {"b": 2}, "$add": {"visits": 1}, "$token": "t"}
    assert profile_traits(update, ("$set_once", "$set"), ("$add", "$unset")) == {"a": 1, "b": 2, "$add": {"visits": 1}}


# --- Mixpanel -------------------------------------------------------------------------------------------------

MP_EVENT = {
    "event": "Signed Up",
    "properties": {
        "token": "wk_mp",
        "distinct_id": "user-1",
        "$device_id": "dev-1",
        "time": T_S,
        "$insert_id": "ins-1",
        "ip": "84.128.1.7",
        "$browser": "Chrome",
        "$os": "Linux",
        "$current_url": "https://shop.example/signup?x=1",
        "$referrer": "https://search.example/",
        "mp_lib": "web",
        "$lib_version": "2.55.0",
        "plan": "pro",
    },
}


@pytest.mark.parametrize(
    ("body", "query", "content_type"),
    [
        (orjson.dumps([MP_EVENT]), "", "application/json"),
        (orjson.dumps(MP_EVENT), "", "application/json"),
        (f"data={b64([MP_EVENT])}&verbose=1".encode(), "", "application/x-www-form-urlencoded"),
        (b"data=" + orjson.dumps(MP_EVENT).replace(b'"', b"%22"), "", "application/x-www-form-urlencoded"),
        (b"", f"data={b64(MP_EVENT)}", ""),
        (orjson.dumps(MP_EVENT) + b"\n\n" + orjson.dumps(MP_EVENT), "", "application/x-ndjson"),
    ],
    ids=["json-array", "json-object", "form-base64", "form-json", "query-data", "ndjson"],
)
def test_mixpanel_bodies_decode_to_the_events(body: bytes, query: str, content_type: str) -> None:
    doc = mixpanel.decode(body, request(query, {"content-type": content_type}))
    assert doc.items and all(item == MP_EVENT for item in doc.items)
    assert doc.verbose == (b"verbose=1" in body)


def test_mixpanel_query_flags_and_headers() -> None:
    doc = mixpanel.decode(
        b"[]", request("verbose=1&strict=1&ip=1", {"authorization": "Basic eDo=", "user-agent": "UA"})
    )
    assert (doc.verbose, doc.strict, doc.basic_auth, doc.user_agent) == (True, True, True, "UA")
    assert not mixpanel.decode(b"[]", request()).strict  # failed_records only when asked for (strict=1)


@pytest.mark.parametrize(
    ("body", "query", "rule"),
    [
        (b"", "", "data: is required"),
        (b"verbose=1", "", "data: is required: a form body"),
        (b"data=%%%", "", "data: is neither JSON nor base64-encoded JSON"),
        (b"data=[1,", "", "data: is not valid JSON"),
        (b"data=\xff\xfe", "", "body: is neither JSON nor a form"),
        (b'"text"', "", "body: must be a JSON array of events (or one event object), or a form"),
        (b"[1, 2", "", "body: invalid JSON at line 1"),
        (b"", "data=MTIz", "body: must be a JSON array of events"),  # base64 of 123
    ],
)
def test_mixpanel_unreadable_bodies_are_400_naming_the_field(body: bytes, query: str, rule: str) -> None:
    with pytest.raises(BodyError) as caught:
        mixpanel.decode(body, request(query))
    assert caught.value.status == 400
    assert str(caught.value).startswith(rule.split(":")[0] + ":")
    assert rule.split(": ", 1)[1].split(" at ")[0] in str(caught.value)


def test_mixpanel_event_maps_every_field() -> None:
    messages, key = mixpanel.events(mixpanel.MixpanelBody([MP_EVENT], user_agent=CHROME))
    assert key == "wk_mp"
    (msg,) = messages
    assert msg[ORIGINAL] is MP_EVENT
    assert {k: v for k, v in msg.items() if k != ORIGINAL} == {
        "type": "track",
        "event": "Signed Up",
        "userId": "user-1",
        "anonymousId": "dev-1",
        "messageId": "ins-1",
        "timestamp": ISO,
        # Ids, time, ip and the token are message fields (the token is the write key: never stored).
        "properties": {
            "$browser": "Chrome",
            "$os": "Linux",
            "$current_url": "https://shop.example/signup?x=1",
            "$referrer": "https://search.example/",
            "mp_lib": "web",
            "$lib_version": "2.55.0",
            "plan": "pro",
        },
        "context": {
            "ip": "84.128.1.7",
            "userAgent": CHROME,  # mixpanel-js (mp_lib web): the request's User-Agent is the user's browser
            "library": {"name": "mixpanel-web", "version": "2.55.0"},
            "page": {
                "url": "https://shop.example/signup?x=1",
                "path": "/signup",
                "referrer": "https://search.example/",
            },
        },
    }
    (event,), dead = canonical(messages)
    assert not dead
    assert (event["event_type"], event["user_id"], event["anonymous_id"], event["event_id"]) == (
        "Signed Up", "user-1", "dev-1", "ins-1",
    )  # fmt: skip
    assert event["timestamp"] == T_MS * 1000 and event["page"] == "/signup"
    assert (event["country"], event["device"], event["library"]) == ("DE", "desktop", "mixpanel-web/2.55.0")
    assert "token" not in event["properties"]


def test_mixpanel_server_library_events_take_no_user_agent_and_ms_times() -> None:
    event = {"event": "e", "properties": {"distinct_id": "u", "time": T_MS, "mp_lib": "python", "$ip": "1.2.3.4"}}
    (msg,), _ = mixpanel.events(mixpanel.MixpanelBody([event], user_agent="python-requests/2.32"))
    assert msg["timestamp"] == ISO
    assert msg["context"] == {"ip": "1.2.3.4", "library": {"name": "mixpanel-python", "version": ""}}


@pytest.mark.parametrize(
    ("props", "user_id", "anonymous_id"),
    [
        ({"distinct_id": "$device:abc"}, None, "abc"),
        ({"distinct_id": "abc", "$device_id": "abc"}, None, "abc"),  # anonymous: distinct_id is the device's id
        ({"distinct_id": "u", "$user_id": "u2", "$device_id": "d"}, "u2", "d"),
        ({"distinct_id": 42}, 42, None),
        ({"distinct_id": ""}, None, None),
    ],
)
def test_mixpanel_identity(props: dict[str, Any], user_id: Any, anonymous_id: Any) -> None:
    msg = mixpanel.event_message({"event": "e", "properties": props}, None)
    assert (msg.get("userId"), msg.get("anonymousId")) == (user_id, anonymous_id)


def test_mixpanel_page_identify_and_alias_events() -> None:
    page = {"event": "$mp_web_page_view", "properties": {"distinct_id": "u", "current_page_title": "Cart",
            "current_url_path": "/cart", "$current_url": "https://s.example/cart?a=1"}}  # fmt: skip
    identify = {"event": "$identify", "properties": {"distinct_id": "u", "$anon_distinct_id": "anon"}}
    alias = {"event": "$create_alias", "properties": {"distinct_id": "old", "alias": "new"}}
    messages, _ = mixpanel.events(mixpanel.MixpanelBody([page, identify, alias]))
    assert [
        (m["type"], m.get("name"), m.get("userId"), m.get("anonymousId"), m.get("previousId")) for m in messages
    ] == [
        ("page", "Cart", "u", None, None),
        ("identify", None, "u", "anon", None),
        ("alias", None, "new", None, "old"),
    ]
    events, dead = canonical(messages)
    assert not dead
    assert [(e["event_type"], e["page"]) for e in events] == [
        ("page_view", "/cart"),
        ("identify", None),
        ("alias", None),
    ]


def test_mixpanel_token_rules() -> None:
    other = {"event": "e", "properties": {"distinct_id": "u", "token": "wk_other"}}
    with pytest.raises(PayloadError, match=r"properties\.token: the events of one request name 2 different keys"):
        mixpanel.events(mixpanel.MixpanelBody([MP_EVENT, other]))
    # With Basic auth the key is its user name: the tokens are not read.
    assert mixpanel.events(mixpanel.MixpanelBody([MP_EVENT, other], basic_auth=True))[1] is None
    assert mixpanel.events(mixpanel.MixpanelBody([{"event": "e"}, 7]))[1] is None


def test_mixpanel_engage_updates_become_identify_with_traits() -> None:
    update = {"$token": "wk_mp", "$distinct_id": "user-1", "$time": T_MS, "$ip": "84.128.1.7", "$set": {"plan": "pro"},
              "$set_once": {"plan": "free", "first": "2026"}, "$add": {"visits": 1}}  # fmt: skip
    (msg,), key = mixpanel.profiles(mixpanel.MixpanelBody([update]))
    assert key == "wk_mp"
    assert msg["traits"] == {"plan": "pro", "first": "2026", "$add": {"visits": 1}}
    assert (msg["type"], msg["userId"], msg["timestamp"], msg["context"]) == (
        "identify", "user-1", ISO, {"ip": "84.128.1.7"},
    )  # fmt: skip
    (event,), _ = canonical([msg])
    assert json.loads(event["properties"]) == {"traits": msg["traits"]} and event["country"] == "DE"
    with pytest.raises(PayloadError, match=r"^\$token: "):
        mixpanel.profiles(mixpanel.MixpanelBody([update, {**update, "$token": "wk_2"}]))


def test_mixpanel_odd_events_are_dead_letters_with_the_event_as_sent() -> None:
    odd = [7, {"properties": {"distinct_id": "u"}}, {"event": "e", "properties": {"time": "soon", "distinct_id": "u"}},
           {"event": "e", "properties": {"time": T_S}}, {"event": "e", "properties": "x"}]  # fmt: skip
    messages, _ = mixpanel.events(mixpanel.MixpanelBody(odd))
    events, dead = canonical(messages)
    assert not events
    # Properties that are not an object hold no distinct_id either: the identity rule comes first.
    assert [d.detail.split(":")[0] for d in dead] == [
        "message", "event", "timestamp", "userId/anonymousId", "userId/anonymousId",
    ]  # fmt: skip
    assert [d.payload for d in dead] == odd


def test_mixpanel_answers() -> None:
    track = mixpanel.Answers("track", DLQ)
    assert track.success(prepared(1, [])).body == b"1"
    track.body.verbose = True
    assert orjson.loads(track.success(prepared(1, [])).body) == {"status": 1, "error": None}
    answer = track.error(429, "over the limit", 2)
    assert (answer.status_code, answer.headers["retry-after"]) == (429, "2")
    assert orjson.loads(answer.body) == {"status": 0, "error": "over the limit"}
    assert orjson.loads(mixpanel.Answers("import", DLQ).error(401, "unknown", None).body) == {
        "code": 401, "status": 0, "error": "unknown",
    }  # fmt: skip


def test_mixpanel_import_names_dead_letters_in_failed_records_when_strict() -> None:
    good = {"event": "e", "properties": {"distinct_id": "u", "$insert_id": "a"}}
    bad = {"event": "e", "properties": {"$insert_id": "b"}}
    items = [good, bad, 5, good]
    messages, _ = mixpanel.events(mixpanel.MixpanelBody(items))
    _, dead = canonical(messages)
    answers = mixpanel.Answers("import", DLQ)
    answers.body = mixpanel.MixpanelBody(items, strict=True)
    answer = answers.success(prepared(4, dead))
    assert answer.status_code == 400
    body = orjson.loads(answer.body)
    assert (body["code"], body["status"], body["num_records_imported"]) == (400, 0, 2)
    assert body["failed_records"] == [
        {"index": 1, "insert_id": "b", "field": "properties.distinct_id",
         "message": "properties.distinct_id: one of them is required"},
        {"index": 2, "insert_id": None, "field": "event", "message": "event: must be a JSON object"},
    ]  # fmt: skip
    answers.body.strict = False
    assert orjson.loads(answers.success(prepared(4, dead)).body) == {
        "code": 200, "error": None, "num_records_imported": 2, "status": 1,
    }  # fmt: skip


# --- Amplitude ------------------------------------------------------------------------------------------------

AMP_EVENT = {
    "event_type": "Order Completed",
    "user_id": "user-1",
    "device_id": "dev-1",
    "time": T_MS,
    "insert_id": "ins-1",
    "event_properties": {"order_id": "o-1"},
    "user_properties": {"plan": "pro"},
    "ip": "84.128.1.7",
    "platform": "iOS",
    "os_name": "ios",
    "device_model": "iPhone 15",
    "country": "Germany",
    "price": 12.5,
    "quantity": 2,
    "currency": "EUR",
    "productId": "sku-1",
    "session_id": 1768471100000,
    "library": "amplitude-python/1.3.0",
    "user_agent": CHROME,
}


def test_amplitude_event_maps_every_field() -> None:
    messages, key = amplitude.batch(amplitude.AmplitudeBody({"api_key": "wk_amp", "events": [AMP_EVENT]}, 10))
    assert key == "wk_amp"
    (msg,) = messages
    assert {k: v for k, v in msg.items() if k != ORIGINAL} == {
        "type": "track",
        "event": "Order Completed",
        "userId": "user-1",
        "anonymousId": "dev-1",
        "messageId": "ins-1",
        "timestamp": ISO,
        "properties": {
            "order_id": "o-1",
            "revenue": 25.0,  # price x quantity
            "currency": "EUR",
            "$user_properties": {"plan": "pro"},
            "$platform": "iOS",
            "$os_name": "ios",
            "$device_model": "iPhone 15",
            "$country": "Germany",
            "$price": 12.5,
            "$quantity": 2,
            "$productId": "sku-1",
            "$session_id": 1768471100000,
        },
        "context": {
            "ip": "84.128.1.7",
            "userAgent": CHROME,
            "library": {"name": "amplitude-python", "version": "1.3.0"},
        },
    }
    (event,), dead = canonical(messages)
    assert not dead
    assert (event["revenue"], event["currency"], event["country"], event["device"]) == (25.0, "EUR", "DE", "desktop")
    assert (event["timestamp"], event["event_id"], event["library"]) == (T_MS * 1000, "ins-1", "amplitude-python/1.3.0")


@pytest.mark.parametrize(
    ("extra", "props", "revenue"),
    [
        ({"revenue": 9.5, "price": 1}, {}, 9.5),
        ({"price": 3}, {}, 3.0),
        ({}, {"$price": 2, "$quantity": 3}, 6.0),
        ({}, {"$revenue": 4}, 4.0),
        ({"revenue": 1}, {"revenue": 7}, 7),  # event_properties win
        ({"price": "3"}, {}, 3.0),
        ({"price": "x"}, {}, None),
    ],
)
def test_amplitude_revenue(extra: dict[str, Any], props: dict[str, Any], revenue: Any) -> None:
    msg = amplitude.event_message({"event_type": "e", "device_id": "d", "event_properties": props, **extra}, None)
    assert msg["properties"].get("revenue") == revenue


def test_amplitude_identify_group_and_page_events() -> None:
    identify = {"event_type": "$identify", "user_id": "u", "user_properties": {"$set": {"plan": "pro"},
                "$setOnce": {"plan": "free", "first": 1}, "$add": {"n": 1}}}  # fmt: skip
    flat = {"event_type": "$identify", "user_id": "u", "user_properties": {"plan": "pro", "$unset": {"x": "-"}}}
    group = {"event_type": "$groupidentify", "user_id": "u", "groups": {"org": "acme"},
             "group_properties": {"$set": {"size": 5}}}  # fmt: skip
    page = {"event_type": "[Amplitude] Page Viewed", "device_id": "d", "platform": "Web",
            "event_properties": {"[Amplitude] Page Path": "/cart", "[Amplitude] Page Title": "Cart",
                                 "[Amplitude] Page URL": "https://s.example/cart"}}  # fmt: skip
    messages = [amplitude.event_message(e, CHROME) for e in (identify, flat, group, page)]
    assert messages[0]["traits"] == {"plan": "pro", "first": 1, "$add": {"n": 1}}
    assert messages[1]["traits"] == {"plan": "pro", "$unset": {"x": "-"}}
    assert "$user_properties" not in messages[1]["properties"]
    assert (messages[2]["type"], messages[2]["groupId"], messages[2]["traits"]) == (
        "group", "acme", {"size": 5, "group_type": "org"},
    )  # fmt: skip
    assert (messages[3]["type"], messages[3]["name"], messages[3]["context"]["userAgent"]) == ("page", "Cart", CHROME)
    events, dead = canonical(messages)
    assert not dead
    assert [(e["event_type"], e["page"]) for e in events] == [
        ("identify", None), ("identify", None), ("group", None), ("page_view", "/cart"),
    ]  # fmt: skip


def test_amplitude_remote_ip_and_server_user_agent_are_not_taken() -> None:
    msg = amplitude.event_message({"event_type": "e", "user_id": "u", "ip": "$remote", "platform": "iOS"}, "ua/1")
    assert msg["context"] == {}


@pytest.mark.parametrize(
    ("document", "rule"),
    [
        ([], "body: must be a JSON object"),
        ({"api_key": "k"}, "events: is required"),
        ({"api_key": "k", "events": {}}, "events: must be a list of events"),
    ],
)
def test_amplitude_unreadable_bodies(document: Any, rule: str) -> None:
    with pytest.raises(PayloadError, match=rule):
        amplitude.batch(amplitude.AmplitudeBody(document, 2))


def test_amplitude_odd_events_are_dead_letters() -> None:
    odd = ["x", {"device_id": "d"}, {"event_type": "e"}, {"event_type": "e", "user_id": "u", "time": "now"},
           {"event_type": "e", "user_id": "u", "event_properties": []}]  # fmt: skip
    messages, _ = amplitude.batch(amplitude.AmplitudeBody({"events": odd}, 2))
    events, dead = canonical(messages)
    assert not events
    assert [d.detail.split(":")[0] for d in dead] == [
        "message",
        "event",
        "userId/anonymousId",
        "timestamp",
        "properties",
    ]
    assert [d.payload for d in dead] == odd


class Tenants:
    """KeyCache's one method the answers use."""

    def tenant_for_write_key(self, key: str) -> Any:
        settings = TenantSettings(events_per_second_limit=5)
        return type("Tenant", (), {"settings": settings})() if key == "wk_amp" else None


def test_amplitude_answers() -> None:
    answers = amplitude.Answers(Tenants())  # type: ignore[arg-type]
    answers.decode(b'{"api_key": "wk_amp", "events": [1, 2, 3]}', request())
    ok = orjson.loads(answers.success(prepared(3, canonical([7])[1])).body)
    assert (ok["code"], ok["events_ingested"], ok["payload_size_bytes"]) == (200, 2, 42)
    assert ok["server_upload_time"] > T_MS
    unknown = answers.error(401, "unknown write key", None)
    assert unknown.status_code == 400
    assert orjson.loads(unknown.body) == {"code": 400, "error": "Invalid API key: unknown write key"}
    assert orjson.loads(answers.error(400, "events: is required", None).body)["missing_field"] == "events"
    assert orjson.loads(answers.error(400, "request body is empty: send", None).body)["missing_field"] == "body"
    throttled = answers.error(429, "tenant t is over its rate limit", 1)
    assert throttled.headers["retry-after"] == "1"
    assert orjson.loads(throttled.body) == {
        "code": 429, "error": "Too many requests for some devices and users (tenant t is over its rate limit)",
        "throttled_devices": {}, "throttled_users": {}, "throttled_events": [], "eps_threshold": 5,
    }  # fmt: skip
    assert orjson.loads(answers.error(413, "too large", None).body) == {"code": 413, "error": "too large"}
    missing = amplitude.Answers(Tenants())  # type: ignore[arg-type]
    missing.decode(b'{"events": []}', request())
    assert orjson.loads(missing.error(401, "missing write key", None).body)["missing_field"] == "api_key"


def test_amplitude_batch_tells_posthog_bodies_apart() -> None:
    answers = amplitude.BatchAnswers(Tenants())  # type: ignore[arg-type]
    with pytest.raises(amplitude.NotAmplitude):
        answers.decode(b'{"api_key": "k", "batch": []}', request(path="/batch"))
    assert answers.decode(b"{}", request(path="/batch")).document == {}  # Amplitude's: "events is required"
    assert answers.decode(b'{"api_key": "k", "events": []}', request(path="/batch")).document["events"] == []
    assert amplitude.redirect_target(request("a=1", path="/batch")) == "/batch/?a=1"


# --- Snowplow -------------------------------------------------------------------------------------------------

SCHEMA = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4"
UE = {"schema": "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0",
      "data": {"schema": "iglu:com.acme/checkout/jsonschema/1-0-0", "data": {"step": 2, "path": "/pay"}}}  # fmt: skip
CONTEXTS = {"schema": "iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-1",
            "data": [{"schema": "iglu:com.acme/user/jsonschema/1-0-0", "data": {"tier": "gold"}}]}  # fmt: skip
SP_BASE = {"eid": "e-1", "aid": "wk_sp", "p": "web", "tv": "js-3.5.0", "tna": "sp", "dtm": str(T_MS),
           "stm": str(T_MS + 2000), "uid": "user-1", "duid": "dom-1", "url": "https://s.example/cart?a=1",
           "page": "Cart", "refr": "https://r.example/", "ip": "84.128.1.7", "lang": "de-DE"}  # fmt: skip


def sp(**fields: Any) -> dict[str, Any]:
    return {**SP_BASE, **fields}


def test_snowplow_post_and_pixel_decode() -> None:
    body = orjson.dumps({"schema": SCHEMA, "data": [sp(e="pv")]})
    doc = snowplow.decode_post(body, request(headers={"user-agent": CHROME}))
    assert (doc.events, doc.basic_auth, doc.user_agent) == ([sp(e="pv")], False, CHROME)
    pixel = snowplow.decode_get(b"", request("e=pv&aid=wk_sp&eid=e-1", method="GET", path="/i"))
    assert pixel.events == [{"e": "pv", "aid": "wk_sp", "eid": "e-1"}]


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        (b"[]", "body: must be a payload_data self-describing JSON"),
        (b'{"schema": "x"}', "data: is required"),
        (b'{"data": {}}', "data: must be a list of events"),
    ],
)
def test_snowplow_unreadable_bodies(body: bytes, rule: str) -> None:
    with pytest.raises(BodyError, match=rule):
        snowplow.decode_post(body, request())
    with pytest.raises(BodyError, match="invalid JSON"):
        snowplow.decode_post(b"{", request())


def test_snowplow_page_view_maps_every_field() -> None:
    (msg,), key = snowplow.events(snowplow.SnowplowBody([sp(e="pv")], user_agent=CHROME))
    assert key == "wk_sp"
    assert {k: v for k, v in msg.items() if k != ORIGINAL} == {
        "type": "page",
        "name": "Cart",
        "messageId": "e-1",
        "userId": "user-1",
        "anonymousId": "dom-1",
        "timestamp": ISO,
        "sentAt": "2026-01-15T10:00:02+00:00",
        # aid is the write key: not stored. Other protocol fields as $<field>.
        "properties": {"url": "https://s.example/cart?a=1", "title": "Cart",
                       "$p": "web", "$tna": "sp", "$lang": "de-DE"},
        "context": {
            "ip": "84.128.1.7",
            "userAgent": CHROME,  # p=web: the request's User-Agent is the user's browser
            "library": {"name": "snowplow-js", "version": "3.5.0"},
            "page": {"url": "https://s.example/cart?a=1", "title": "Cart", "referrer": "https://r.example/",
                     "path": "/cart"},
        },
    }  # fmt: skip
    (event,), dead = canonical([msg])
    assert not dead
    assert (event["event_type"], event["page"], event["country"], event["device"]) == (
        "page_view", "/cart", "DE", "desktop",
    )  # fmt: skip
    # dtm corrected by the skew stm - dtm (2 s), as Snowplow's derived_tstamp.
    assert (event["timestamp"], event["original_timestamp"]) == (RECEIVED - 2_000_000, T_MS * 1000)


def test_snowplow_structured_self_describing_and_transaction_events() -> None:
    se = sp(e="se", se_ca="shop", se_ac="add-to-basket", se_la="sku-1", se_pr="red", se_va="2.5")
    ue_pr = sp(e="ue", ue_pr=orjson.dumps(UE).decode(), co=orjson.dumps(CONTEXTS).decode())
    ue_px = sp(e="ue", ue_px=b64(UE).rstrip("="), cx=b64(CONTEXTS), ttm=str(T_MS - 60_000))
    tr = sp(e="tr", tr_id="o-1", tr_tt="30.5", tr_tx="5", tr_sh="2", tr_cu="eur", tr_af="web")
    ti = sp(e="ti", ti_id="o-1", ti_sk="sku-1", ti_nm="Shirt", ti_pr="10", ti_qu="3", ti_cu="EUR")
    pp = sp(e="pp", pp_mix="0", pp_max="10")
    messages, _ = snowplow.events(snowplow.SnowplowBody([se, ue_pr, ue_px, tr, ti, pp]))
    names = [m["event"] for m in messages]
    assert names == ["shop/add-to-basket", "checkout", "checkout", "Order Completed", "Order Item", "Page Ping"]
    assert {k: messages[0]["properties"][k] for k in ("category", "action", "label", "property", "value")} == {
        "category": "shop", "action": "add-to-basket", "label": "sku-1", "property": "red", "value": 2.5,
    }  # fmt: skip
    for msg in messages[1:3]:
        assert msg["properties"]["step"] == 2 and msg["properties"]["$schema"] == UE["data"]["schema"]
        assert msg["properties"]["$contexts"] == CONTEXTS["data"]
    # ttm (the true time) wins, without skew correction: no sentAt.
    assert messages[2]["timestamp"] == "2026-01-15T09:59:00+00:00" and "sentAt" not in messages[2]
    assert {k: messages[3]["properties"][k] for k in ("order_id", "revenue", "tax", "shipping", "currency")} == {
        "order_id": "o-1", "revenue": 30.5, "tax": 5, "shipping": 2, "currency": "EUR",
    }  # fmt: skip
    assert {k: messages[4]["properties"][k] for k in ("sku", "name", "price", "quantity")} == {
        "sku": "sku-1", "name": "Shirt", "price": 10, "quantity": 3,
    }  # fmt: skip
    events, dead = canonical(messages)
    assert not dead
    order = events[3]
    assert (order["event_type"], order["revenue"], order["currency"]) == ("Order Completed", 30.5, "EUR")


def test_snowplow_key_rules() -> None:
    with pytest.raises(PayloadError, match="aid: the events of one request name 2 different keys"):
        snowplow.events(snowplow.SnowplowBody([sp(e="pv"), sp(e="pv", aid="wk_other")]))
    (msg,), key = snowplow.events(snowplow.SnowplowBody([sp(e="pv")], basic_auth=True))
    assert key is None and msg["properties"]["$aid"] == "wk_sp"  # not the key: an ordinary field
    (server,), _ = snowplow.events(snowplow.SnowplowBody([sp(e="pv", p="srv")], user_agent="python-requests/2"))
    assert "userAgent" not in server["context"]


def test_snowplow_odd_events_are_dead_letters() -> None:
    no_user = {k: v for k, v in sp(e="pv").items() if k not in ("uid", "duid")}
    odd = ["x", sp(), sp(e="ue", ue_px="%%%"), sp(e="ue", ue_pr='{"data": {"schema": "nope", "data": {}}}'),
           sp(e="se"), no_user, sp(e="pv", dtm="soon"), sp(e="tr", tr_tt="30")]  # fmt: skip
    messages, _ = snowplow.events(snowplow.SnowplowBody(odd))
    events, dead = canonical(messages)
    assert not events
    assert [d.detail.split(":")[0] for d in dead] == [
        "message", "event", "event", "event", "event", "userId/anonymousId", "timestamp", "properties.currency",
    ]  # fmt: skip
    assert [d.payload for d in dead] == odd
    # Contexts that cannot be read are kept as sent, not a reason to lose the event.
    (msg,), _ = snowplow.events(snowplow.SnowplowBody([sp(e="pv", cx="%%%")]))
    assert msg["properties"]["$contexts"] == "%%%"


def test_snowplow_answers() -> None:
    assert snowplow.success_post(prepared(1, [])).body == b"ok"
    pixel = snowplow.success_pixel(prepared(1, []))
    assert (pixel.body, pixel.media_type) == (PIXEL, "image/gif")
    refused = snowplow.error(429, "over", 3)
    assert (refused.status_code, refused.body, refused.headers["retry-after"]) == (429, b"over", "3")


def test_a_path_served_by_two_routes_answers_other_methods_with_both() -> None:
    client = TestClient(create_app(Settings(_env_file=None)))  # type: ignore[call-arg]  # no lifespan: no clients
    for path, allowed in (
        ("/track", "GET, POST"),
        ("/engage/", "GET, POST"),
        ("/import/", "POST"),
        ("/i", "GET, POST"),
    ):
        answer = client.put(path)
        assert (answer.status_code, answer.headers["allow"]) == (405, allowed), path

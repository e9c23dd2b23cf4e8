"""The browser SDKs' routes over real HTTP, as browsers send to them: CORS preflights and headers, text/plain and
sendBeacon bodies on every ingest route, analytics.js' short paths and settings, posthog-js' encodings and its
config, flags and decide calls, a page of a refused origin, X-Forwarded-For from a trusted proxy or not, and
counts that add up (accepted + dead-lettered + rejected = sent)."""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from analytics_core.serving import server_options
from analytics_core.settings import Settings
from analytics_core.topics import ensure_topics
from collector.app import create_app
from collector.main import proxy_options
from tenants import TenantStore, create_tenant_with_keys
from tests.conftest import delete_topics
from tests.integration.helpers import read_dead_letters, read_events
from tests.pipeline_env import isolated
from tests.servers import serve

pytestmark = pytest.mark.integration

OPEN_KEY, SHOP_KEY = "wk_browser_http_open", "wk_browser_http_shop"  # any origin; https://shop.example only
SHOP, ELSEWHERE = "https://shop.example", "https://elsewhere.example"
DE_IP = "84.128.1.7"  # geolocates to DE (generator/geo.py)
SEGMENT_SINGLE = ["/v1/track", "/v1/page", "/v1/identify", "/v1/group", "/v1/alias", "/v1/screen"]
SHORT = {"/t": "track", "/p": "page", "/i": "identify", "/g": "group", "/a": "alias", "/s": "screen"}
POSTHOG = ["/batch/", "/e/", "/i/v0/e/", "/capture/"]
CONFIG = ["/decide/", "/flags/", f"/v1/projects/{OPEN_KEY}/settings", f"/array/{OPEN_KEY}/config"]


@dataclass(frozen=True)
class Collectors:
    url: str  # trusts loopback's X-Forwarded-For, as configured by default
    untrusting: str  # trusts only 192.0.2.1: loopback's X-Forwarded-For is ignored
    settings: Settings


@pytest.fixture(scope="module")
def collectors(kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collectors]:
    settings = isolated(kafka_settings, tmp_path_factory.mktemp("browser_http"), topics=True)
    ensure_topics(settings)
    store = TenantStore(settings.tenants_db)
    create_tenant_with_keys(store, "open", OPEN_KEY, "rk_browser_http_open")
    create_tenant_with_keys(store, "shop", SHOP_KEY, "rk_browser_http_shop", allowed_origins=(SHOP,))
    untrusting = settings.model_copy(update={"collector_trusted_proxies": "192.0.2.1"})
    try:
        with (
            serve(create_app(settings), **server_options(settings), **proxy_options(settings)) as url,
            serve(create_app(untrusting), **server_options(untrusting), **proxy_options(untrusting)) as other,
        ):
            yield Collectors(url, other, settings)
    finally:
        delete_topics(settings)


def message(run: str, message_type: str = "track", **extra: Any) -> dict[str, Any]:
    fields = {"track": {"event": "checkout"}, "group": {"groupId": "g-1"}, "alias": {"previousId": f"old-{run}"}}
    return {"type": message_type, "userId": "u-1", "messageId": uuid.uuid4().hex, "properties": {"run": run},
            "traits": {"run": run}, **fields.get(message_type, {}), **extra}  # fmt: skip


def ph_event(run: str, name: str = "checkout", **properties: Any) -> dict[str, Any]:
    props = {"distinct_id": "ph-1", "token": OPEN_KEY, "$pathname": "/cart", "run": run, **properties}
    return {"event": name, "uuid": str(uuid.uuid4()), "properties": props}


def post(url: str, body: Any, origin: str | None = SHOP, content_type: str | None = "text/plain", **kw: Any) -> Any:
    headers = {**({"Origin": origin} if origin else {}), **({"Content-Type": content_type} if content_type else {})}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(url, content=content, headers={**headers, **kw.pop("headers", {})}, timeout=15, **kw)


def of_run(run: str) -> Any:
    return lambda e: run in e["properties"]


def test_preflights_are_answered_on_every_browser_path(collectors: Collectors) -> None:
    asked = {"Origin": ELSEWHERE, "Access-Control-Request-Method": "POST"}
    for path in ["/v1/batch", *SEGMENT_SINGLE, *SHORT, "/b", *POSTHOG, *CONFIG]:
        answer = httpx.options(
            collectors.url + path, headers={**asked, "Access-Control-Request-Headers": "content-type,authorization"}
        )
        assert answer.status_code == 204, path
        assert answer.headers["access-control-allow-origin"] == ELSEWHERE  # before the key is known: any page
        assert answer.headers["access-control-allow-methods"] == "POST, GET, OPTIONS"
        assert answer.headers["access-control-allow-headers"] == "content-type,authorization"
        assert int(answer.headers["access-control-max-age"]) >= 600
    operational = httpx.options(collectors.url + "/metrics", headers=asked)
    assert operational.status_code == 405 and "access-control-allow-origin" not in operational.headers


def test_text_plain_and_beacon_bodies_are_accepted_on_every_ingest_route(collectors: Collectors) -> None:
    """JSON sent as text/plain (fetch without a preflight), text/plain;charset=UTF-8 (sendBeacon of a string),
    with no Content-Type at all, or as JSON, on each ingest route, from a page of an allowed origin."""
    run = uuid.uuid4().hex
    sent = 0
    for content_type in ("text/plain", "text/plain;charset=UTF-8", None, "application/json"):
        requests: list[tuple[str, Any]] = [("/v1/batch", {"batch": [message(run)], "writeKey": OPEN_KEY})]
        requests += [(path, message(run, path[4:], writeKey=OPEN_KEY)) for path in SEGMENT_SINGLE]
        requests += [(path, {**message(run, SHORT[path]), "writeKey": OPEN_KEY}) for path in SHORT]
        requests += [("/b", {"batch": [message(run)], "writeKey": OPEN_KEY, "sentAt": "2026-01-01T00:00:00Z"})]
        requests += [(path, {"api_key": OPEN_KEY, "batch": [ph_event(run)]}) for path in POSTHOG]
        for path, body in requests:
            answer = post(collectors.url + path, body, ELSEWHERE, content_type)
            assert answer.status_code == 200, (path, content_type, answer.text)
            assert answer.headers["access-control-allow-origin"] == ELSEWHERE
            assert answer.headers["vary"] == "Origin"
        sent += len(requests)
    events = read_events(collectors.settings, of_run(run), sent)
    assert len(events) == sent and {e["tenant_id"] for e in events} == {"open"}


def test_short_paths_take_the_type_from_the_path_and_the_key_from_the_body_or_basic_auth(
    collectors: Collectors,
) -> None:
    run = uuid.uuid4().hex
    for path, message_type in SHORT.items():
        body = {k: v for k, v in message(run, message_type).items() if k != "type"}
        assert post(collectors.url + path, {**body, "writeKey": OPEN_KEY}).status_code == 200
    basic = "Basic " + base64.b64encode(f"{OPEN_KEY}:".encode()).decode()  # analytics-next sends both
    batch = {"batch": [message(run, "page", name="Cart"), message(run)], "sentAt": "2026-01-01T00:00:00Z"}
    assert post(collectors.url + "/b", batch, headers={"Authorization": basic}).status_code == 200
    events = read_events(collectors.settings, of_run(run), len(SHORT) + 2)
    assert sorted(e["message_type"] for e in events) == sorted([*SHORT.values(), "page", "track"])
    missing = post(collectors.url + "/t", message(run))
    assert missing.status_code == 401 and missing.headers["access-control-allow-origin"] == SHOP


def test_the_settings_document_sends_analytics_js_here(collectors: Collectors) -> None:
    url = f"{collectors.url}/v1/projects/{OPEN_KEY}/settings"
    answer = httpx.get(url, headers={"Origin": ELSEWHERE})
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == ELSEWHERE
    segment = answer.json()["integrations"]["Segment.io"]
    assert (segment["apiKey"], segment["apiHost"], segment["protocol"]) == (OPEN_KEY, url.split("/")[2], "http")
    behind_tls = httpx.get(url, headers={"Host": "collector.example", "X-Forwarded-Proto": "https"}).json()
    assert behind_tls["integrations"]["Segment.io"]["apiHost"] == "collector.example"
    assert behind_tls["integrations"]["Segment.io"]["protocol"] == "https"  # from the trusted (loopback) proxy
    unknown = httpx.get(f"{collectors.url}/v1/projects/wk_nobody_has_it/settings", headers={"Origin": SHOP})
    assert unknown.status_code == 404 and "unknown write key" in unknown.json()["error"]
    assert unknown.headers["access-control-allow-origin"] == SHOP  # analytics.js reads and logs the reason
    shop_settings = f"{collectors.url}/v1/projects/{SHOP_KEY}/settings"
    assert httpx.get(shop_settings, headers={"Origin": SHOP}).status_code == 200
    refused = httpx.get(shop_settings, headers={"Origin": ELSEWHERE})
    assert refused.status_code == 403 and ELSEWHERE in refused.json()["error"]


def test_every_posthog_encoding_and_body_shape_is_accepted(collectors: Collectors) -> None:
    run = uuid.uuid4().hex

    def pageviews() -> bytes:  # a new event each time: the same one again would be dropped as a resend
        return json.dumps([ph_event(run, "$pageview")]).encode()

    def form(**fields: str) -> bytes:
        return urlencode({"data": base64.b64encode(pageviews()).decode(), **fields}).encode()

    form_type = "application/x-www-form-urlencoded"
    identify = {**ph_event(run, "$identify", **{"$anon_distinct_id": "a-1"}), "$set": {"run": run}}  # posthog-js
    sends = [
        ("/e/", gzip.compress(pageviews()), "text/plain", ""),  # posthog-js now: gzip, said by its bytes only
        ("/e/", gzip.compress(pageviews()), "text/plain", "?compression=gzip-js&ver=1.449.2&_=1"),
        ("/i/v0/e/", form(), form_type, "?compression=base64"),  # its sendBeacon fallback
        ("/capture/", form(compression="base64"), form_type, ""),
        ("/capture/", urlencode({"data": json.dumps([ph_event(run)])}).encode(), form_type, ""),  # older releases
        ("/e/", json.dumps(ph_event(run)).encode(), "application/json", ""),  # one event; key in its properties
        ("/batch/", json.dumps({"batch": [identify]}).encode(), "application/json", ""),
    ]
    for path, body, content_type, query in sends:
        answer = post(collectors.url + path + query, body, content_type=content_type)
        assert answer.status_code == 200, (path, query, answer.text)
    events = read_events(collectors.settings, of_run(run), len(sends))
    assert sorted(e["event_type"] for e in events) == sorted(["page_view"] * 4 + ["checkout"] * 2 + ["identify"])
    assert all((e["tenant_id"], e["user_id"], e["page"]) == ("open", "ph-1", "/cart") for e in events)
    assert [e["anonymous_id"] for e in events if e["event_type"] == "identify"] == ["a-1"]
    lz64 = post(collectors.url + "/e/?compression=lz64", b"data=xyz", content_type=form_type)
    assert lz64.status_code == 400 and "lz64" in lz64.json()["error"]
    assert lz64.headers["access-control-allow-origin"] == SHOP


def test_decide_flags_and_config_tell_posthog_js_to_send_here_without_flags(collectors: Collectors) -> None:
    token = json.dumps({"token": OPEN_KEY, "distinct_id": "ph-1"}).encode()
    answers = [
        post(f"{collectors.url}/flags/?v=2&config=true", gzip.compress(token)),
        post(f"{collectors.url}/decide/?v=3", b"data=" + base64.b64encode(token), content_type=None),
        httpx.get(f"{collectors.url}/decide/?v=4&token={OPEN_KEY}", headers={"Origin": SHOP}),
        httpx.get(f"{collectors.url}/flags/", params={"token": OPEN_KEY}, headers={"Origin": SHOP}),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        document = answer.json()
        assert (document["flags"], document["featureFlags"], document["sessionRecording"]) == ({}, {}, False)
        assert "gzip-js" in document["supportedCompression"]
        assert answer.headers["access-control-allow-origin"] == SHOP
    config = httpx.get(f"{collectors.url}/array/{OPEN_KEY}/config", headers={"Origin": SHOP})
    assert config.status_code == 200 and config.json()["hasFeatureFlags"] is False
    script = httpx.get(f"{collectors.url}/array/{OPEN_KEY}/config.js")
    assert script.headers["content-type"].startswith("text/javascript") and "_POSTHOG_REMOTE_CONFIG" in script.text
    assert httpx.get(f"{collectors.url}/array/wk_nobody_has_it/config").status_code == 404
    for refused in (post(f"{collectors.url}/flags/?v=2", {"distinct_id": "x"}), httpx.get(f"{collectors.url}/decide/")):
        assert refused.status_code == 401 and "token" in refused.json()["error"]
    wrong_page = post(f"{collectors.url}/flags/?v=2", {"token": SHOP_KEY}, origin=ELSEWHERE)
    assert wrong_page.status_code == 403 and wrong_page.headers["access-control-allow-origin"] == ELSEWHERE


def test_a_page_of_a_refused_origin_gets_403_and_nothing_is_kept(collectors: Collectors) -> None:
    run = uuid.uuid4().hex
    refused = [
        post(collectors.url + "/t", {**message(run), "writeKey": SHOP_KEY}, ELSEWHERE),
        post(collectors.url + "/v1/batch", {"batch": [message(run)], "writeKey": SHOP_KEY}, ELSEWHERE),
        post(collectors.url + "/e/", gzip.compress(json.dumps([ph_event(run, token=SHOP_KEY)]).encode()), ELSEWHERE),
    ]
    for answer in refused:
        assert answer.status_code == 403
        error = answer.json()["error"]
        assert ELSEWHERE in error and "allowed_origins" in error
        assert answer.headers["access-control-allow-origin"] == ELSEWHERE  # the SDK reads the 403 and drops the batch
    allowed = post(collectors.url + "/t", {**message(run, event="allowed"), "writeKey": SHOP_KEY}, SHOP)
    server_side = post(collectors.url + "/v1/track", {**message(run, event="server"), "writeKey": SHOP_KEY}, None)
    assert (allowed.status_code, server_side.status_code) == (200, 200)  # no Origin: not a browser, not refused
    events = read_events(collectors.settings, of_run(run), 2)
    assert sorted(e["event_type"] for e in events) == ["allowed", "server"]


def test_the_client_address_comes_from_a_trusted_proxys_x_forwarded_for(collectors: Collectors) -> None:
    run = uuid.uuid4().hex
    for url, event in ((collectors.url, "trusted"), (collectors.untrusting, "untrusted")):
        body = {**message(run, event=event), "writeKey": OPEN_KEY}
        assert post(url + "/t", body, headers={"X-Forwarded-For": f"10.1.2.3, {DE_IP}"}).status_code == 200
    events = {e["event_type"]: e for e in read_events(collectors.settings, of_run(run), 2)}
    assert (events["trusted"]["ip"], events["trusted"]["country"]) == (DE_IP, "DE")  # the hop before the proxy
    assert (events["untrusted"]["ip"], events["untrusted"]["country"]) == ("127.0.0.1", None)


def metrics(url: str) -> dict[tuple[str, str], float]:
    text = httpx.get(url + "/metrics").text
    return {
        (sample.name, sample.labels.get("reason") or sample.labels.get("status", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def test_accepted_dead_lettered_and_rejected_add_up_to_what_was_sent(collectors: Collectors) -> None:
    run = uuid.uuid4().hex
    before = metrics(collectors.url)
    good = [message(run), message(run, "page", name="Cart"), ph_event(run)]
    bad = [message(run, event=""), {"type": "track", "properties": {"run": run}}]  # no event name; no user
    accepted_requests = [
        ("/b", {"batch": [good[0], bad[0]], "writeKey": OPEN_KEY}, SHOP),
        ("/p", {**good[1], "writeKey": OPEN_KEY}, SHOP),
        ("/e/", gzip.compress(json.dumps({"api_key": OPEN_KEY, "batch": [good[2]]}).encode()), SHOP),
        ("/t", {**bad[1], "writeKey": OPEN_KEY}, SHOP),
    ]
    rejected_requests = [
        ("/b", {"batch": [message(run), message(run)], "writeKey": SHOP_KEY}, ELSEWHERE),  # 403: 2 messages
        ("/t", {**message(run), "writeKey": "wk_nobody_has_it"}, SHOP),  # 401: 1
        ("/e/", b"data=%%%", SHOP),  # 400: its messages unknown, counted as 1
    ]
    for path, body, origin in accepted_requests:
        assert post(collectors.url + path, body, origin).status_code == 200
    assert [post(collectors.url + p, b, o).status_code for p, b, o in rejected_requests] == [403, 401, 400]
    sent = len(good) + len(bad) + 2 + 1 + 1

    after = metrics(collectors.url)
    delta = {key: after.get(key, 0) - before.get(key, 0) for key in after}
    accepted = delta[("collector_events_accepted_total", "")]
    dead = sum(v for (name, _), v in delta.items() if name == "collector_events_dead_lettered_total")
    rejected_messages = 2 + 1 + 1
    assert (accepted, dead) == (len(good), len(bad))
    assert delta[("collector_events_received_total", "")] == accepted + dead
    assert accepted + dead + rejected_messages == sent
    assert [delta[("collector_requests_rejected_total", s)] for s in ("403", "401", "400")] == [1, 1, 1]
    assert len(read_events(collectors.settings, of_run(run), len(good))) == len(good)
    letters = read_dead_letters(collectors.settings, lambda d: run in json.dumps(d.payload), len(bad))
    assert sorted(d.tenant_id or "" for d in letters) == ["open", "open"]

"""Browser SDKs' bodies and documents: PostHog's encodings and body shapes, the settings and config documents,
and the CORS middleware, without a server."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any
from urllib.parse import quote

import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from collector import adapters, browser
from collector.adapters import ORIGINAL, PayloadError
from collector.body import BodyError
from collector.cors import Cors

LIMIT = 64 * 1024
EVENT = {"event": "$pageview", "properties": {"distinct_id": "d-1", "token": "wk_key_1", "$pathname": "/cart"}}


def decode(body: bytes, compression: str | None = None, content_type: str = "text/plain") -> Any:
    return browser.decode_posthog(body, compression, content_type, LIMIT)


def form(data: str, **fields: str) -> bytes:
    return "&".join(f"{k}={quote(v, safe='')}" for k, v in {"data": data, **fields}.items()).encode()


def b64(document: Any) -> str:
    return base64.b64encode(json.dumps(document).encode()).decode()


@pytest.mark.parametrize(
    ("body", "compression", "content_type"),
    [
        (json.dumps([EVENT]).encode(), None, "application/json"),
        (gzip.compress(json.dumps([EVENT]).encode()), "gzip-js", "text/plain"),  # posthog-js before 1.2xx
        (gzip.compress(json.dumps([EVENT]).encode()), None, "text/plain"),  # now: no query, only the bytes say it
        (form(b64([EVENT])), "base64", "application/x-www-form-urlencoded"),  # its sendBeacon fallback
        (form(b64([EVENT]), compression="base64"), None, "application/x-www-form-urlencoded"),
        (form(b64([EVENT])), None, ""),  # a form without its content type, base64 told by its text
        (form(json.dumps([EVENT])), None, "application/x-www-form-urlencoded"),  # older releases: data=<JSON>
        (form(b64([EVENT])).replace(b"%2B", b"+"), "base64", "application/x-www-form-urlencoded"),
        (b64([EVENT]).encode(), "base64", "text/plain"),
        (json.dumps([EVENT]).encode(), "gzip-js", "text/plain"),  # said gzip, is not: taken as it is
    ],
)
def test_every_posthog_encoding_decodes_to_the_same_document(body: bytes, compression: str, content_type: str) -> None:
    assert decode(body, compression, content_type) == [EVENT]


def test_base64_pluses_sent_as_spaces_and_the_url_alphabet_decode() -> None:
    document = {"event": "x", "properties": {"text": "~~~>>>???"}}  # base64 of it holds + and /
    text = b64(document)
    assert "+" in text or "/" in text
    assert decode(f"data={text.replace('+', ' ')}".encode(), "base64") == document
    urlsafe = text.replace("+", "-").replace("/", "_").rstrip("=")
    assert decode(f"data={urlsafe}".encode(), "base64") == document


@pytest.mark.parametrize(
    ("body", "compression", "message"),
    [
        (b"{}", "lz64", "compression 'lz64' is not supported"),
        (b"data=%%%", None, "neither JSON nor base64"),
        (b"nope", "gzip-js", "body: invalid JSON at line 1, column 1"),  # said gzip, is not: read as it is
        ("data=é".encode(), None, "URL-encoded ASCII"),
        (b"x=1", None, "needs a data field"),
        (gzip.compress(b"{}")[:-6], None, "not valid gzip"),
        (b"", None, "request body is empty"),
    ],
)
def test_undecodable_posthog_bodies_are_400_with_the_reason(body: bytes, compression: str, message: str) -> None:
    content_type = "application/x-www-form-urlencoded" if body.startswith((b"data=", b"x=")) else "text/plain"
    with pytest.raises(BodyError) as caught:
        decode(body, compression, content_type)
    assert caught.value.status == 400
    assert message in str(caught.value), str(caught.value)


def test_a_gzip_bomb_without_content_encoding_is_refused_at_the_limit() -> None:
    with pytest.raises(BodyError) as caught:
        decode(gzip.compress(b"[" + b" " * (LIMIT * 4) + b"]"))
    assert caught.value.status == 413


@pytest.mark.parametrize(
    "body",
    [
        {"api_key": "wk_key_1", "batch": [EVENT], "sent_at": "2026-01-15T10:00:01Z"},
        {"token": "wk_key_1", "batch": [EVENT]},
        {"batch": [EVENT]},  # the key from the event's properties
        [EVENT],
        EVENT,
    ],
)
def test_posthog_capture_takes_batches_lists_and_single_events(body: Any) -> None:
    messages, key = adapters.posthog_capture(body)
    assert key == "wk_key_1"
    assert len(messages) == 1
    message = messages[0]
    assert (message["type"], message["userId"], message["context"]["page"]["path"]) == ("page", "d-1", "/cart")
    assert message[ORIGINAL] == EVENT


def test_posthog_capture_keys_and_refusals() -> None:
    assert adapters.posthog_capture({"event": "x", "api_key": "wk_top"})[1] == "wk_top"
    assert adapters.posthog_capture([{"event": "x"}, {"event": "y", "token": "wk_second"}])[1] == "wk_second"
    assert adapters.posthog_capture([])[0] == []
    assert adapters.posthog_capture([5, "x"])[0] == [5, "x"]  # dead-lettered later, one by one
    for body in ("text", 5, None, {"batch": 5}):
        with pytest.raises(PayloadError):
            adapters.posthog_capture(body)


def test_posthog_js_users_identify_and_bad_person_properties() -> None:
    anonymous = {"event": "checkout", "properties": {"distinct_id": "device-1", "$is_identified": False}}
    (message,), _ = adapters.posthog_capture(anonymous)
    assert message["anonymousId"] == "device-1" and "userId" not in message
    identify = {
        "event": "$identify",
        "$set": {"email": "a@example.com"},
        "properties": {"distinct_id": "user-1", "$anon_distinct_id": "device-1", "$set": {"plan": "pro"}},
    }
    (message,), _ = adapters.posthog_capture(identify)
    assert (message["type"], message["userId"], message["anonymousId"]) == ("identify", "user-1", "device-1")
    assert message["traits"] == {"plan": "pro", "email": "a@example.com"}
    for broken in ("text", 5, ["a"]):  # never raises: the pipeline judges the message
        (message,), _ = adapters.posthog_capture({"event": "$identify", "$set": broken, "properties": broken})
        assert message["type"] == "identify" and "traits" not in message


def request_with(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": raw, "query_string": b""})


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("collector.example", "collector.example"),
        ("127.0.0.1:8080", "127.0.0.1:8080"),
        ("[::1]:8080", "[::1]:8080"),
        ("evil.example/path", None),
        ("a b", None),
        ("", None),
    ],
)
def test_the_api_host_is_the_host_header_when_it_is_one(host: str, expected: str | None) -> None:
    assert browser.api_host(request_with({"host": host})) == expected


def test_the_settings_send_analytics_js_here_with_its_metrics_off() -> None:
    settings = browser.segment_settings("wk_key_1", "collector.example:8443", "https")
    assert settings["integrations"] == {
        "Segment.io": {
            "apiKey": "wk_key_1",
            "apiHost": "collector.example:8443",
            "protocol": "https",
            "unbundledIntegrations": [],
            "addBundledMetadata": True,
            "maybeBundledConfigIds": {},
        }
    }  # Segment.io alone: no destination bundles are loaded
    assert settings["metrics"] == {"sampleRate": 0} and settings["remotePlugins"] == []


def test_the_posthog_documents_turn_flags_and_recordings_off() -> None:
    config = browser.posthog_config("wk_key_1")
    assert config["hasFeatureFlags"] is False and config["sessionRecording"] is False
    assert config["supportedCompression"] == ["gzip", "gzip-js"]
    flags = browser.posthog_flags("wk_key_1")
    assert (flags["flags"], flags["featureFlags"], flags["errorsWhileComputingFlags"]) == ({}, {}, False)
    assert flags["config"] == {"enable_collect_everything": True}
    script = browser.posthog_config_script("wk_key_1").decode()
    assert script.startswith("(function(){") and '["wk_key_1"]=' in script
    assert json.loads(script.split("]=", 1)[1].removesuffix("})();"))["config"] == config
    assert browser.posthog_token({"token": "wk_a", "api_key": "wk_b"}) == "wk_a"
    assert browser.posthog_token({"api_key": "wk_b"}) == "wk_b"
    assert browser.posthog_token([{"token": "wk_a"}]) is None


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse(f"{scope['method']} {scope['path']}", headers={"Retry-After": "3"})(scope, receive, send)


@pytest.fixture()
def cors_client() -> TestClient:
    return TestClient(Cors(echo, exempt=frozenset({"/metrics"})), base_url="http://collector")


PREFLIGHT = {"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"}


def test_preflights_are_answered_permissively(cors_client: TestClient) -> None:
    answer = cors_client.options(
        "/t", headers={**PREFLIGHT, "Access-Control-Request-Headers": "authorization,X-Custom"}
    )
    assert answer.status_code == 204 and answer.content == b""
    assert answer.headers["access-control-allow-origin"] == "https://shop.example"
    assert answer.headers["access-control-allow-methods"] == "POST, GET, OPTIONS"
    assert answer.headers["access-control-allow-headers"] == "authorization,X-Custom"
    assert int(answer.headers["access-control-max-age"]) > 0
    assert "Origin" in answer.headers["vary"]
    assert "access-control-allow-private-network" not in answer.headers
    odd = cors_client.options("/e/", headers={**PREFLIGHT, "Access-Control-Request-Headers": "a\tb;c"})
    assert odd.headers["access-control-allow-headers"] == "content-type, authorization"
    private = cors_client.options("/e/", headers={**PREFLIGHT, "Access-Control-Request-Private-Network": "true"})
    assert private.headers["access-control-allow-private-network"] == "true"


def test_answers_to_pages_carry_the_origin_and_expose_retry_after(cors_client: TestClient) -> None:
    answer = cors_client.post("/t", headers={"Origin": "https://shop.example"})
    assert answer.text == "POST /t"
    assert answer.headers["access-control-allow-origin"] == "https://shop.example"
    assert answer.headers["access-control-expose-headers"] == "Retry-After"
    assert answer.headers["vary"] == "Origin"
    sandboxed = cors_client.post("/t", headers={"Origin": "null"})
    assert sandboxed.headers["access-control-allow-origin"] == "*"


def test_no_cors_without_an_origin_nor_on_operational_paths(cors_client: TestClient) -> None:
    server_sdk = cors_client.post("/v1/batch")
    assert "access-control-allow-origin" not in server_sdk.headers
    assert cors_client.options("/t").text == "OPTIONS /t"  # not a preflight: the app answers it (405)
    metrics = cors_client.get("/metrics", headers={"Origin": "https://shop.example"})
    assert "access-control-allow-origin" not in metrics.headers
    exempt_preflight = cors_client.options("/metrics", headers=PREFLIGHT)
    assert exempt_preflight.text == "OPTIONS /metrics"

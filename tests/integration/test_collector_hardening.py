"""Hardening of a real collector, served as `analytics collector` serves it (uvicorn, server_options).

Batches above the tenant's burst, relative trailing-slash redirects, failed-auth throttling per address, slow
heads and bodies, and the OpenAPI document describing what the handlers really take and answer.
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import jsonschema
import pytest
import redis

from analytics_core.clients import redis_async_client
from analytics_core.settings import Settings
from collector.app import create_app
from tenants import TenantStore, create_tenant_with_keys
from tenants.throttle import AuthThrottle
from tests.integration.hardening import connect, read_response, serve_like_production, trickle
from tests.integration.helpers import forget_redis_keys

pytestmark = pytest.mark.integration

TAG = uuid.uuid4().hex[:8]
HEAD_TIMEOUT_S, BODY_TIMEOUT_S, MAX_HEAD = 1.0, 1.5, 8192
FAILURES, BLOCK_S = 3, 3.0
INGEST = ("/v1/batch", "/v1/track", "/v1/identify", "/v1/page", "/v1/screen", "/v1/group", "/v1/alias", "/batch/")


@dataclass(frozen=True)
class Hardened:
    url: str
    settings: Settings
    key: str  # write key of a tenant with the default limits
    tiny_key: str  # write key of a tenant whose events_per_second_limit is 5


@pytest.fixture(scope="module")
def hardened(kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hardened]:
    settings = kafka_settings.model_copy(
        update={
            "tenants_db": tmp_path_factory.mktemp("hardening") / "tenants.sqlite",
            "redis_key_prefix": f"test:{TAG}:",
            "http_head_timeout_s": HEAD_TIMEOUT_S,
            "http_body_timeout_s": BODY_TIMEOUT_S,
            "http_max_head_bytes": MAX_HEAD,
            "auth_throttle_failures": FAILURES,
            "auth_throttle_window_s": 60.0,
            "auth_throttle_block_s": BLOCK_S,
        }
    )
    store = TenantStore(settings.tenants_db)
    key, tiny_key = f"wk_hard_{TAG}", f"wk_tiny_{TAG}"
    create_tenant_with_keys(store, f"hard_{TAG}", key, f"rk_hard_{TAG}")
    create_tenant_with_keys(store, f"tiny_{TAG}", tiny_key, f"rk_tiny_{TAG}", events_per_second_limit=5)
    try:
        with serve_like_production(create_app(settings), settings) as url:
            yield Hardened(url, settings, key, tiny_key)
    finally:
        forget_redis_keys(settings, TAG)


def track(**extra: Any) -> dict[str, Any]:
    return {"type": "track", "event": "page_view", "userId": f"u-{uuid.uuid4().hex[:6]}",
            "messageId": uuid.uuid4().hex, "timestamp": datetime.now(UTC).isoformat(), **extra}  # fmt: skip


def address() -> str:
    """A client address of its own (198.18.0.0/15, for tests), sent as X-Forwarded-For (uvicorn trusts loopback's)."""
    return f"198.{random.randint(18, 19)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def post(h: Hardened, body: object, key: str | None, path: str = "/v1/batch", client: str | None = None, **kw: Any):
    headers = {"X-Forwarded-For": client} if client else {}
    auth = (key, "") if key else None
    return httpx.post(f"{h.url}{path}", json=body, auth=auth, headers=headers, timeout=30, **kw)


def rejected(h: Hardened, status: int) -> float:
    text = httpx.get(f"{h.url}/metrics", timeout=10).text
    line = f'collector_requests_rejected_total{{status="{status}"}}'
    return sum(float(row.rsplit(" ", 1)[1]) for row in text.splitlines() if row.startswith(line))


# --- a batch larger than the tenant's burst -------------------------------------------------------------------


def test_a_batch_larger_than_the_burst_is_413_naming_the_limit_every_time(hardened: Hardened) -> None:
    six = {"batch": [track() for _ in range(6)]}
    for _ in range(3):  # an SDK resending it: the same clear refusal, never an endless 429
        answer = post(hardened, six, hardened.tiny_key)
        assert answer.status_code == 413, answer.text
        body = answer.json()
        assert body["code"] == 413 and body["status"] == 0
        assert "6 events" in body["error"] and "burst of 5 events" in body["error"]
        assert "events_per_second_limit" in body["error"] and "at most 5" in body["error"]
        assert "retry-after" not in answer.headers
    # The refusals charged nothing: a batch of the burst's size passes at once.
    assert post(hardened, {"batch": [track() for _ in range(5)]}, hardened.tiny_key).status_code == 200


# --- redirects ------------------------------------------------------------------------------------------------


def test_trailing_slash_redirects_are_relative_whatever_the_host_header(hardened: Hardened) -> None:
    evil = {"Host": "evil.example"}
    answer = httpx.post(f"{hardened.url}/v1/batch/?a=1&b=%2F", content=b"{}", headers=evil, follow_redirects=False)
    assert answer.status_code == 307
    assert answer.headers["location"] == "/v1/batch?a=1&b=%2F"
    answer = httpx.get(f"{hardened.url}/healthz/", headers=evil, follow_redirects=False)
    assert (answer.status_code, answer.headers["location"]) == (307, "/healthz")
    posthog = b'{"batch": []}'  # /batch is Amplitude's unless it is a PostHog batch (routes/amplitude.py)
    assert httpx.post(f"{hardened.url}/batch", content=posthog, headers=evil).headers["location"] == "/batch/"
    for path in ("/nope/", "//evil.example/", "/"):
        assert httpx.get(f"{hardened.url}{path}", headers=evil, follow_redirects=False).status_code == 404, path
    # A client that follows the redirect (307 keeps method and body) gets its batch in.
    answer = post(hardened, {"batch": [track()]}, hardened.key, path="/v1/batch/", follow_redirects=True)
    assert answer.status_code == 200, answer.text


# --- failed-auth throttling -----------------------------------------------------------------------------------


def test_unknown_write_keys_block_their_address_and_no_other(hardened: Hardened) -> None:
    guesser, neighbour = address(), address()
    body = {"batch": [track()]}
    for n in range(FAILURES):
        answer = post(hardened, body, f"wk_guess_{n}", client=guesser)
        assert answer.status_code == 401, (n, answer.text)
        assert "unknown write key" in answer.json()["error"]
    refused = post(hardened, body, "wk_guess_again", client=guesser)
    assert refused.status_code == 429, refused.text
    wait = int(refused.headers["Retry-After"])
    assert 1 <= wait <= BLOCK_S
    assert "unknown write key" in refused.json()["error"] and f"wait {wait} s" in refused.json()["error"]
    # While blocked, the right key is refused too: a guesser cannot tell a hit from a miss.
    assert post(hardened, body, hardened.key, client=guesser).status_code == 429
    assert post(hardened, {**body, "writeKey": hardened.key}, None, client=guesser).status_code == 429
    # Other addresses are not affected.
    assert post(hardened, {"batch": [track()]}, hardened.key, client=neighbour).status_code == 200
    time.sleep(wait + 0.2)  # cooled down
    assert post(hardened, {"batch": [track()]}, hardened.key, client=guesser).status_code == 200


def test_requests_without_a_key_are_not_guesses_and_loopback_is_never_throttled(hardened: Hardened) -> None:
    client = address()
    for _ in range(FAILURES + 2):
        answer = post(hardened, {"batch": [track()]}, None, client=client)
        assert answer.status_code == 401 and "missing write key" in answer.json()["error"]
    for n in range(FAILURES + 2):  # no X-Forwarded-For: the peer is 127.0.0.1, exempt (a local proxy or tool)
        assert post(hardened, {"batch": [track()]}, f"wk_local_{n}").status_code == 401
    assert post(hardened, {"batch": [track()]}, hardened.key, client=client).status_code == 200


def test_a_block_is_shared_through_redis_by_every_worker(stack_settings: Settings, redis_conn: redis.Redis) -> None:
    """Two throttles on one Redis, as two uvicorn workers: the guesser's failures on one count on the other, and
    the other refuses the guesser's next failure with 429 instead of answering 401 again."""
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    guesser = "2001:db8:17:1::5"

    async def scenario() -> tuple[list[int | None], int | None, int | None, int | None]:
        client = redis_async_client(stack_settings)
        try:
            one, two = (
                AuthThrottle(client, "collector", failures=3, window_s=60, block_s=30, key_prefix=prefix)
                for _ in range(2)
            )
            answers = [await one.failed(guesser), await two.failed(guesser), await one.failed(guesser)]
            unaware = two.retry_after(guesser)  # two never saw the failure that reached the limit
            on_two = await two.failed("2001:db8:17:1:ffff::9")  # same /64: the same subscriber
            return answers, unaware, on_two, two.retry_after(guesser)
        finally:
            await client.aclose()

    try:
        answers, unaware, on_two, after = asyncio.run(scenario())
    finally:
        redis_conn.delete(*redis_conn.keys(f"{prefix}*") or [f"{prefix}none"])
    assert answers == [None, None, None], "the first three failures answer 401"
    assert unaware is None
    assert on_two is not None and 25 <= on_two <= 30, "a failure above the limit is refused with the block's rest"
    assert after is not None, "and the second worker now refuses the address without asking Redis"


# --- slow and large heads, slow bodies ------------------------------------------------------------------------


def test_a_slow_head_gets_408_and_the_connection_is_closed(hardened: Hardened) -> None:
    sent, seconds = trickle(hardened.url, b"POST /v1/batch HTTP/1.1\r\nHost: x\r\n", b"X-Slow: " + b"a" * 200, 0.1, 10)
    assert sent.startswith(b"HTTP/1.1 408"), sent
    assert b"request head not received within 1 s" in sent
    assert HEAD_TIMEOUT_S - 0.1 <= seconds <= HEAD_TIMEOUT_S + 2


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(hardened: Hardened) -> None:
    sent, seconds = trickle(hardened.url, b"", b"", 0.1, 10)
    assert sent == b""
    assert HEAD_TIMEOUT_S - 0.1 <= seconds <= HEAD_TIMEOUT_S + 2


def test_a_head_above_the_size_limit_gets_431(hardened: Hardened) -> None:
    head = b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (2 * MAX_HEAD)
    sent, seconds = trickle(hardened.url, head, b"a" * 10, 0.1, 10)
    assert sent.startswith(b"HTTP/1.1 431"), sent
    assert seconds < HEAD_TIMEOUT_S


def test_a_slow_body_gets_408_and_the_connection_is_closed(hardened: Hardened) -> None:
    before = rejected(hardened, 408)
    auth = b"Basic " + base64.b64encode(f"{hardened.key}:".encode())
    head = (b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: " + auth
            + b"\r\nContent-Length: 300\r\n\r\n")  # fmt: skip
    sent, seconds = trickle(hardened.url, head + b'{"batch": [', b" " * 299, 0.1, 10)
    status, _, body = sent.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 408") and b"connection: close" in status.lower(), sent
    assert httpx.Response(408, content=body).json() == {
        "code": 408,
        "status": 0,
        "error": "request body not received within 1.5 s: send the whole body at once, then retry",
        "results": {},
    }
    assert BODY_TIMEOUT_S - 0.1 <= seconds <= BODY_TIMEOUT_S + 2
    assert rejected(hardened, 408) == before + 1


def test_an_answer_sent_before_the_body_is_read_closes_the_connection(hardened: Hardened) -> None:
    head = b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 300\r\n\r\n"
    sent, seconds = trickle(hardened.url, head + b"{", b" " * 299, 0.1, 10)
    assert sent.startswith(b"HTTP/1.1 404") and b"connection: close" in sent.lower(), sent
    assert seconds < BODY_TIMEOUT_S, "the rest of the slow body is not waited for"


def test_a_kept_alive_connection_may_idle_between_requests_longer_than_the_head_timeout(hardened: Hardened) -> None:
    with connect(hardened.url) as sock:
        for _ in range(2):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock).startswith(b"HTTP/1.1 200")
            time.sleep(HEAD_TIMEOUT_S + 0.5)  # within keep-alive (5 s): the head timer starts at the next byte


# --- the OpenAPI document -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def document(hardened: Hardened) -> dict[str, Any]:
    return httpx.get(f"{hardened.url}/openapi.json", timeout=10).json()


def check_against(document: dict[str, Any], path: str, answer: httpx.Response) -> None:
    """The answer's status, media type, headers and body are the ones the document gives for it."""
    responses = document["paths"][path]["post"]["responses"]
    documented = responses.get(str(answer.status_code))
    assert documented is not None, f"{answer.status_code} from {path} is not documented: {answer.text}"
    assert answer.headers["content-type"].split(";")[0] in documented["content"]
    schema = documented["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator({**schema, "components": document["components"]}).validate(answer.json())
    for name, header in documented.get("headers", {}).items():
        if header.get("required"):
            assert int(answer.headers[name]) >= 1


def test_every_ingest_operation_documents_its_body_auth_and_answers(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert document["components"]["securitySchemes"]["writeKeyBasic"] == {
        "type": "http",
        "scheme": "basic",
        "description": document["components"]["securitySchemes"]["writeKeyBasic"]["description"],
    }
    for path in INGEST:
        operation = document["paths"][path]["post"]
        body = operation["requestBody"]
        assert body["required"] is True
        schema = body["content"]["application/json"]["schema"]  # PostHog's: any of a batch, a list, one event
        refs = [schema["$ref"]] if "$ref" in schema else [s["$ref"] for s in schema["anyOf"] if "$ref" in s]
        assert refs and all(ref.rsplit("/", 1)[1] in schemas for ref in refs)
        assert {"writeKeyBasic": []} in operation["security"] and {} in operation["security"]
        assert operation["x-content-encodings"] == ["identity", "gzip"] and "gzip" in operation["description"]
        assert set(operation["responses"]) == {"200", "400", "401", "403", "408", "413", "429", "503"}, path
        for status in ("429", "503"):
            assert operation["responses"][status]["headers"]["Retry-After"]["required"] is True
    assert schemas["SegmentBatch"]["required"] == ["batch"] and schemas["PostHogBatch"]["required"] == ["batch"]
    assert "text/plain" in document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert set(document["paths"]["/readyz"]["get"]["responses"]) == {"200", "503"}


def test_the_documented_examples_are_accepted(hardened: Hardened, document: dict[str, Any]) -> None:
    for path in INGEST:
        example = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["example"]
        answer = post(hardened, example, hardened.key, path=path)
        assert answer.status_code == 200, (path, answer.text)
        check_against(document, path, answer)


def test_what_the_schema_accepts_is_accepted_and_what_it_refuses_is_refused(
    hardened: Hardened, document: dict[str, Any]
) -> None:
    """The body schemas are exactly the HTTP layer's rules: any messages in a batch list → 200 (bad ones are
    dead-lettered); no batch list, or not an object → 400."""
    components = document["components"]

    def valid(path: str, body: object) -> bool:
        ref = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        return jsonschema.Draft202012Validator({**ref, "components": components}).is_valid(body)

    cases = [
        ("/v1/batch", {"batch": [1, "x", None, {}, track()]}),
        ("/v1/batch", {"batch": [], "writeKey": 5, "sentAt": "not a time", "context": {"ip": "10.0.0.1"}}),
        ("/v1/track", {"event": 5}),
        ("/v1/alias", {}),
        ("/batch/", {"batch": [{"event": None}, 7], "api_key": ["x"]}),
        ("/v1/batch", {"batch": {"0": track()}}),
        ("/v1/batch", {"events": []}),
        ("/v1/batch", {"batch": None}),
        ("/v1/batch", [track()]),
        ("/v1/identify", [track()]),
        ("/v1/page", "text"),
        ("/batch/", {"batch": "x"}),
    ]
    for path, body in cases:
        answer = post(hardened, body, hardened.key, path=path)
        assert answer.status_code == (200 if valid(path, body) else 400), (path, body, answer.text)
        check_against(document, path, answer)


def test_refusals_match_the_document(hardened: Hardened, document: dict[str, Any]) -> None:
    check_against(document, "/v1/batch", post(hardened, {"batch": [track()]}, "wk_not_a_tenant"))  # 401
    check_against(document, "/v1/track", post(hardened, {"batch": [track()]}, None, path="/v1/track"))
    too_big = post(hardened, {"batch": [track() for _ in range(6)]}, hardened.tiny_key)
    assert too_big.status_code == 413
    check_against(document, "/v1/batch", too_big)
    raw = httpx.post(f"{hardened.url}/batch/", content=b"{", auth=(hardened.key, ""), timeout=10)
    assert raw.status_code == 400
    check_against(document, "/batch/", raw)
    client = address()
    for n in range(FAILURES + 1):
        answer = post(hardened, {"batch": []}, f"wk_guess_{n}", client=client)
    assert answer.status_code == 429
    check_against(document, "/v1/batch", answer)

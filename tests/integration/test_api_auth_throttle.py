"""Hardening of a real query API, served as `analytics api` serves it (api.main.served_app, uvicorn
with server_options): failed-auth throttling per address, relative redirects, slow heads and bodies. No warehouse
is needed: the catalogue answers without one."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from analytics_core.clients import redis_client
from analytics_core.settings import Settings
from api.main import served_app
from tenants import TenantStore, create_tenant_with_keys
from tests.integration.hardening import serve_like_production, trickle

pytestmark = pytest.mark.integration

TAG = uuid.uuid4().hex[:8]
HEAD_TIMEOUT_S, BODY_TIMEOUT_S = 1.0, 1.5
FAILURES, BLOCK_S = 3, 3.0


@dataclass(frozen=True)
class Api:
    url: str
    read_key: str


@pytest.fixture(scope="module")
def api(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    folder: Path = tmp_path_factory.mktemp("api_hardening")
    settings = stack_settings.model_copy(
        update={
            "tenants_db": folder / "tenants.sqlite",
            "warehouse_path": folder / "no-warehouse",
            "redis_key_prefix": f"test:{TAG}:",
            "http_head_timeout_s": HEAD_TIMEOUT_S,
            "http_body_timeout_s": BODY_TIMEOUT_S,
            "auth_throttle_failures": FAILURES,
            "auth_throttle_window_s": 60.0,
            "auth_throttle_block_s": BLOCK_S,
        }
    )
    read_key = f"rk_api_hard_{TAG}"
    create_tenant_with_keys(TenantStore(settings.tenants_db), f"api_hard_{TAG}", f"wk_api_hard_{TAG}", read_key)
    try:
        with serve_like_production(served_app(settings), settings) as url:
            yield Api(url, read_key)
    finally:
        conn = redis_client(settings)
        try:
            keys = list(conn.scan_iter(match=f"test:{TAG}:*"))
            if keys:
                conn.delete(*keys)
        finally:
            conn.close()


def address() -> str:
    return f"198.{random.randint(18, 19)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def catalogue(api: Api, key: str | None, client: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if client:
        headers["X-Forwarded-For"] = client
    return httpx.get(f"{api.url}/api/v1/metrics", headers=headers, timeout=30)


def test_unknown_read_keys_block_their_address_and_no_other(api: Api) -> None:
    guesser, neighbour = address(), address()
    for n in range(FAILURES):
        answer = catalogue(api, f"rk_guess_{n}", guesser)
        assert answer.status_code == 401, answer.text
        assert answer.headers["WWW-Authenticate"] == "Bearer"
    refused = catalogue(api, "rk_guess_again", guesser)
    assert refused.status_code == 429, refused.text
    wait = int(refused.headers["Retry-After"])
    assert 1 <= wait <= BLOCK_S
    assert "unknown read key" in refused.json()["error"] and f"wait {wait} s" in refused.json()["error"]
    assert catalogue(api, api.read_key, guesser).status_code == 429, "the right key is refused too while blocked"
    assert catalogue(api, api.read_key, neighbour).status_code == 200
    for _ in range(FAILURES + 1):  # no key at all is not a guess
        assert catalogue(api, None, neighbour).status_code == 401
    time.sleep(wait + 0.2)
    assert catalogue(api, api.read_key, guesser).status_code == 200


def test_trailing_slash_redirect_is_relative(api: Api) -> None:
    answer = httpx.get(
        f"{api.url}/api/v1/metrics/?x=1", headers={"Host": "evil.example"}, follow_redirects=False, timeout=10
    )
    assert (answer.status_code, answer.headers["location"]) == (307, "/api/v1/metrics?x=1")


def test_a_slow_query_body_gets_408_in_the_api_error_shape(api: Api) -> None:
    head = (
        f"POST /api/v1/query HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {api.read_key}\r\n"
        "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
    ).encode()
    sent, seconds = trickle(api.url, head + b'{"metrics": [', b" " * 199, 0.1, 10)
    status, _, body = sent.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 408") and b"connection: close" in status.lower(), sent
    assert orjson.loads(body) == {
        "error": "request body not received within 1.5 s: send the whole body at once, then retry"
    }
    assert BODY_TIMEOUT_S - 0.1 <= seconds <= BODY_TIMEOUT_S + 2


def test_a_slow_head_gets_408(api: Api) -> None:
    sent, seconds = trickle(api.url, b"GET /api/v1/metrics HTTP/1.1\r\n", b"Host: " + b"x" * 100, 0.1, 10)
    assert sent.startswith(b"HTTP/1.1 408"), sent
    assert HEAD_TIMEOUT_S - 0.1 <= seconds <= HEAD_TIMEOUT_S + 2

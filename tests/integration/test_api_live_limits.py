"""/api/v1/live served on loopback over real Redis: key changes end open streams, streams share Redis, limits hold."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI

from analytics_core.realtime_keys import RealtimeKeys
from analytics_core.settings import Settings
from api.app import create_app
from tenants import TenantStore, create_tenant_with_keys
from tests.servers import serve

pytestmark = pytest.mark.integration
KEYS = {"acme": "rk_acme_key_1", "bolt": "rk_bolt_key_1", "cora": "rk_cora_key_1"}
MARGIN_S = 1.5  # scheduling slack on a busy machine


@dataclass
class LiveApi:
    url: str
    app: FastAPI
    settings: Settings
    store: TenantStore


@contextmanager
def live_api(base: Settings, tmp_path: Path, redis_prefix: str, **changes: Any) -> Iterator[LiveApi]:
    settings = base.model_copy(
        update={
            "tenants_db": tmp_path / "tenants.sqlite",
            "warehouse_path": tmp_path / "no-warehouse" / "warehouse",  # live streams need only Redis
            "redis_key_prefix": redis_prefix,
            "api_live_interval_s": 0.5,
            "api_replica": False,  # no lake to mirror
            **changes,
        }
    )
    store = TenantStore(settings.tenants_db)
    for tenant, key in KEYS.items():
        create_tenant_with_keys(store, tenant, f"wk_{tenant}_key_1", key)
    app = create_app(settings)
    with serve(app) as url:
        yield LiveApi(url, app, settings, store)


@pytest.fixture()
def api(stack_settings: Settings, tmp_path: Path, redis_prefix: str) -> Iterator[LiveApi]:
    with live_api(stack_settings, tmp_path, redis_prefix) as running:
        yield running


class Sse:
    """One open /api/v1/live response read frame by frame."""

    def __init__(self, client: httpx.Client, api: LiveApi, key: str) -> None:
        request = client.build_request("GET", f"{api.url}/api/v1/live", headers={"Authorization": f"Bearer {key}"})
        self.response = client.send(request, stream=True)
        self.status = self.response.status_code
        self._lines = self.response.iter_lines()

    def next(self) -> tuple[str, dict[str, Any]] | None:
        """The next (event, data), or None when the server ended the stream."""
        event: str | None = None
        data: dict[str, Any] = {}
        for line in self._lines:
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "" and event is not None:
                return event, data
        return None

    def close(self) -> None:
        self.response.close()


@pytest.fixture()
def client() -> Iterator[httpx.Client]:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    with httpx.Client(timeout=httpx.Timeout(10.0), limits=limits) as c:
        yield c


def opened(client: httpx.Client, api: LiveApi, key: str) -> Sse:
    """A stream that answered 200 and sent its first counters."""
    sse = Sse(client, api, key)
    assert sse.status == 200, sse.response.read()
    first = sse.next()
    assert first is not None and first[0] == "counters", first
    return sse


def read_until_end(sse: Sse, deadline_s: float) -> list[tuple[str, dict[str, Any]]]:
    frames = []
    started = time.monotonic()
    while (frame := sse.next()) is not None:
        frames.append(frame)
        assert time.monotonic() - started < deadline_s, f"stream still open after {deadline_s:.1f} s"
    return frames


def key_change_deadline(api: LiveApi) -> float:
    """The key cache's refresh time (a change reaches it within its ttl), one key check, and a margin."""
    ttl = float(getattr(api.app.state.api.tenants, "_ttl", 5.0))
    return ttl + api.settings.api_live_key_check_s + MARGIN_S


def check_ended_for_the_key(api: LiveApi, client: httpx.Client, sse: Sse, changed_at: float, key: str) -> None:
    frames = read_until_end(sse, key_change_deadline(api) + 1)
    took = time.monotonic() - changed_at
    assert took <= key_change_deadline(api), f"stream ended {took:.1f} s after the key change"
    assert frames and frames[-1][0] == "error", frames[-3:]
    assert "no longer valid" in frames[-1][1]["error"]
    assert all(event == "counters" for event, _ in frames[:-1])  # nothing else changed meanwhile
    again = client.get(f"{api.url}/api/v1/live", headers={"Authorization": f"Bearer {key}"})
    assert again.status_code == 401


def test_rotating_the_read_key_ends_open_streams_within_the_cache_refresh(api: LiveApi, client: httpx.Client) -> None:
    rotated = [opened(client, api, KEYS["acme"]) for _ in range(2)]
    untouched = opened(client, api, KEYS["bolt"])
    api.store.rotate_keys("acme", "read")
    api.store.rotate_keys("bolt", "write")  # the read key stays: its stream goes on
    changed_at = time.monotonic()
    for sse in rotated:
        check_ended_for_the_key(api, client, sse, changed_at, KEYS["acme"])
    assert time.monotonic() - changed_at > api.settings.api_live_key_check_s
    for _ in range(3):
        frame = untouched.next()
        assert frame is not None and frame[0] == "counters"
    untouched.close()


def test_deleting_the_tenant_ends_its_open_streams(api: LiveApi, client: httpx.Client) -> None:
    doomed = opened(client, api, KEYS["cora"])
    other = opened(client, api, KEYS["acme"])
    api.store.delete("cora")
    changed_at = time.monotonic()
    check_ended_for_the_key(api, client, doomed, changed_at, KEYS["cora"])
    frame = other.next()
    assert frame is not None and frame[0] == "counters"
    other.close()


def redis_connections_of_this_process(port: int) -> set[int]:
    """Local ports of this process' established TCP connections to `port` (the API runs in this process)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in (Path("/proc/self/net/tcp"), Path("/proc/self/net/tcp6")):
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            cols = line.split()
            local, remote, state, inode = cols[1], cols[2], cols[3], cols[9]
            if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port and inode in inodes:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def live_clients(conn: redis.Redis, ports: set[int]) -> int:
    """The hub's connections among them, as Redis lists them (CLIENT LIST)."""
    return sum(
        1
        for c in conn.client_list()
        if c.get("name") == "analytics-api-live" and int(c["addr"].rsplit(":", 1)[1]) in ports
    )


@pytest.mark.skipif(not Path("/proc/self/net/tcp").exists(), reason="counts sockets through /proc (Linux)")
def test_streams_of_a_key_share_redis_and_the_one_over_the_limit_gets_429(
    stack_settings: Settings, tmp_path: Path, redis_prefix: str, redis_conn: redis.Redis, client: httpx.Client
) -> None:
    n = 40
    # No heartbeat within the test: every read below is caused by the test.
    changes = {"api_live_interval_s": 60.0, "api_live_max_streams_per_key": n}
    with live_api(stack_settings, tmp_path, redis_prefix, **changes) as api:
        hub = api.app.state.api.live_hub
        keys = RealtimeKeys(redis_prefix)
        port = api.settings.redis_port

        def publish_and_read_all(streams: list[Sse]) -> None:
            minute = int(time.time()) // 60 * 60 - 120
            update = {"applied_at": time.time(), "events": 1, "minutes": [minute], "corrections": [minute]}
            reads = hub.reads
            assert redis_conn.publish(keys.updates("acme"), json.dumps(update)) == 1  # one subscriber: the hub
            for sse in streams:
                frames = [sse.next(), sse.next()]
                assert [f[0] if f else None for f in frames] == ["correction", "counters"]
            assert hub.reads == reads + 1  # one read answered every stream

        streams = [opened(client, api, KEYS["acme"])]
        publish_and_read_all(streams)
        with_one = redis_connections_of_this_process(port)
        assert 1 <= live_clients(redis_conn, with_one) <= 2  # the subscription and one reader

        streams += [opened(client, api, KEYS["acme"]) for _ in range(n - 1)]
        publish_and_read_all(streams)
        with_n = redis_connections_of_this_process(port)
        assert len(with_n) <= len(with_one), (with_one, with_n)
        assert live_clients(redis_conn, with_n) <= 2
        assert hub.open_streams == n

        over = client.get(f"{api.url}/api/v1/live", headers={"Authorization": f"Bearer {KEYS['acme']}"})
        assert over.status_code == 429, over.text
        assert over.headers["retry-after"] == str(api.settings.api_retry_after_s)
        message = over.json()["error"]
        assert f"limit of {n} per key" in message and "ANALYTICS_API_LIVE_MAX_STREAMS_PER_KEY" in message
        other = opened(client, api, KEYS["bolt"])  # another tenant's key is not affected
        assert hub.open_streams == n + 1
        for sse in [*streams, other]:
            sse.close()


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def status(client: httpx.Client, api: LiveApi, key: str) -> int:
    return client.get(f"{api.url}/api/v1/live", headers={"Authorization": f"Bearer {key}"}).status_code


def test_closed_streams_free_their_slot(
    stack_settings: Settings, tmp_path: Path, redis_prefix: str, redis_conn: redis.Redis, client: httpx.Client
) -> None:
    with live_api(stack_settings, tmp_path, redis_prefix, api_live_max_streams_per_key=2) as api:
        hub = api.app.state.api.live_hub
        channel = RealtimeKeys(redis_prefix).updates("acme")
        first, second = opened(client, api, KEYS["acme"]), opened(client, api, KEYS["acme"])
        assert status(client, api, KEYS["acme"]) == 429
        first.close()
        wait_for(lambda: hub.open_streams == 1)
        third = opened(client, api, KEYS["acme"])  # the freed slot is taken again
        assert status(client, api, KEYS["acme"]) == 429
        second.close()
        third.close()
        wait_for(lambda: hub.open_streams == 0)
        # The tenant's last stream gone, the hub stops listening for it.
        wait_for(lambda: dict(redis_conn.pubsub_numsub(channel)).get(channel.encode()) == 0)
        again = [opened(client, api, KEYS["acme"]) for _ in range(2)]
        for sse in again:
            sse.close()


def test_the_process_wide_cap_answers_503(
    stack_settings: Settings, tmp_path: Path, redis_prefix: str, client: httpx.Client
) -> None:
    with live_api(stack_settings, tmp_path, redis_prefix, api_live_max_streams=2) as api:
        streams = [opened(client, api, KEYS["acme"]), opened(client, api, KEYS["bolt"])]
        refused = client.get(f"{api.url}/api/v1/live", headers={"Authorization": f"Bearer {KEYS['cora']}"})
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == str(api.settings.api_retry_after_s)
        assert "ANALYTICS_API_LIVE_MAX_STREAMS" in refused.json()["error"]
        for sse in streams:
            sse.close()

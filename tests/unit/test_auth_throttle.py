"""AuthThrottle's rules with a fake clock: counting per address, blocking, cooling down, exemptions, no Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio

from tenants.throttle import AuthThrottle, address_key, parse_networks


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def throttle(clock: Clock, client: redis.asyncio.Redis | None = None, **kw: object) -> AuthThrottle:
    options: dict = {"failures": 3, "window_s": 60.0, "block_s": 30.0, "exempt": parse_networks("127.0.0.0/8,::1")}
    return AuthThrottle(client, "test", clock=clock, **(options | kw))


def fail(t: AuthThrottle, address: str | None) -> int | None:
    return asyncio.run(t.failed(address))


def test_the_failure_reaching_the_limit_blocks_the_address_for_block_s() -> None:
    clock = Clock()
    t = throttle(clock)
    assert [fail(t, "192.0.2.1") for _ in range(3)] == [None, None, None]  # 401, 401, 401
    assert t.retry_after("192.0.2.1") == 30
    assert t.retry_after("192.0.2.2") is None
    assert fail(t, "192.0.2.1") == 30  # a failure above the limit: 429 at once
    clock.now += 29.5
    assert t.retry_after("192.0.2.1") == 1
    clock.now += 0.6
    assert t.retry_after("192.0.2.1") is None  # cooled down
    assert fail(t, "192.0.2.1") is None  # and counted from zero again


def test_failures_older_than_the_window_are_forgotten() -> None:
    clock = Clock()
    t = throttle(clock)
    fail(t, "192.0.2.1")
    fail(t, "192.0.2.1")
    clock.now += 61
    fail(t, "192.0.2.1")
    fail(t, "192.0.2.1")
    assert t.retry_after("192.0.2.1") is None


def test_exempt_unknown_and_disabled() -> None:
    clock = Clock()
    t = throttle(clock)
    for address in ("127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1", None, "unix-socket-peer"):
        assert [fail(t, address) for _ in range(5)] == [None] * 5, address
        assert t.retry_after(address) is None
    off = throttle(clock, failures=0)
    assert [fail(off, "192.0.2.1") for _ in range(5)] == [None] * 5
    assert off.retry_after("192.0.2.1") is None


def test_ipv6_clients_are_counted_by_their_64_and_mapped_ipv4_as_ipv4() -> None:
    none: tuple = ()
    assert address_key("2001:db8:1:2:aaaa::1", none) == address_key("2001:db8:1:2:bbbb::2", none) == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1", none) != address_key("2001:db8:1:2::1", none)
    assert address_key("::ffff:192.0.2.7", none) == "192.0.2.7"
    clock = Clock()
    t = throttle(clock)
    for n in range(3):
        fail(t, f"2001:db8:1:2::{n + 1}")
    assert t.retry_after("2001:db8:1:2:ffff::9") == 30


def test_without_redis_failures_are_counted_in_the_process() -> None:
    """A client whose server is not there: the throttle still blocks (per process) and says why in the log."""
    clock = Clock()
    client = redis.asyncio.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, socket_timeout=0.2)

    async def run() -> tuple[list[int | None], int | None]:
        t = throttle(clock, client)
        answers = [await t.failed("192.0.2.9") for _ in range(4)]
        await client.aclose()
        return answers, t.retry_after("192.0.2.9")

    answers, blocked = asyncio.run(run())
    assert answers == [None, None, None, 30]
    assert blocked == 30


def test_the_refusal_says_what_happened_and_what_to_do() -> None:
    message = throttle(Clock()).refusal(12, "write key")
    assert message == (
        "too many requests with an unknown write key from this address (3 within 60 s): "
        "wait 12 s, then send a valid write key"
    )


def test_bad_exempt_networks_are_named() -> None:
    with pytest.raises(ValueError, match="auth_throttle_exempt: 'nope'"):
        parse_networks("127.0.0.0/8, nope")

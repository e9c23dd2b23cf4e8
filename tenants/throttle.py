"""Failed-auth throttling per client address, for the collector (write keys) and the query API (read keys).

After `failures` unknown keys from one address within `window_s` (counted from the first of them), every request
from that address is refused with 429 and Retry-After for `block_s`, whatever key it carries: a guesser learns
nothing from a refusal, and cannot tell a right guess from a wrong one until the block ends. Requests without a
key, or with an unreadable Authorization header, are not counted: they guess nothing. A missing or unknown key
still answers 401 until the limit is reached; the failure that reaches it does too, the requests after it get 429.

Where the state lives: Redis, with a cache of blocked addresses in each process. Both services run several uvicorn
workers (and a deployment several hosts): counts kept in each process would multiply the guesses allowed by the
number of processes and be forgotten at every restart. Only a failure touches Redis (one script call, paid by
the one who sent a wrong key); the check every request makes is a dict lookup in the process, empty unless some
address is blocked. A process learns that an address is blocked from its own failures' counts: the failure that
reaches the limit, or, on another worker, the guesser's next failure, which finds the count above it. When Redis
cannot be reached, failures are counted in the process for a while, so throttling degrades to per worker, never
to none.

Addresses are what the server calls the client (uvicorn takes X-Forwarded-For from trusted proxies only: set
FORWARDED_ALLOW_IPS behind a load balancer). An IPv6 client is counted by its /64, the block one subscriber gets.
Exempt networks (loopback by default) are never throttled: traffic from there is a local proxy or tool, and
throttling it would throttle every client behind it at once.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import TYPE_CHECKING, TypeVar

import redis
import redis.asyncio

if TYPE_CHECKING:
    from analytics_core.settings import Settings

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")
REDIS_RETRY_S = 5.0  # after a Redis failure, count in the process this long before trying Redis again
MAX_TRACKED = 100_000  # addresses a process keeps (blocked, or counted without Redis) before dropping the oldest

# KEYS[1] the address's failure count. ARGV: window ms, failures allowed, block ms. The count lives for the window
# from its first failure; the failure that reaches the limit makes it live for the block instead. Returns
# {count, ms it still lives}.
_COUNT_FAILURE = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if n == tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
"""


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """'127.0.0.0/8,::1' → networks; ValueError naming the bad one."""
    networks = []
    for part in text.split(","):
        if part.strip():
            try:
                networks.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError as exc:
                raise ValueError(f"auth_throttle_exempt: {part.strip()!r} is not a network ({exc})") from None
    return tuple(networks)


@lru_cache(maxsize=65_536)
def address_key(address: str, exempt: tuple[IPNetwork, ...]) -> str | None:
    """What failures are counted by: the IPv4 address, the /64 of an IPv6 one; None when exempt or not an IP."""
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address)
    except ValueError:
        return None  # a Unix-socket peer or a name: nothing to count by
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in network for network in exempt):
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class AuthThrottle:
    """Counts unknown keys per client address and blocks an address that sends too many (see the module doc)."""

    def __init__(
        self,
        client: redis.asyncio.Redis | None,
        service: str,
        *,
        failures: int,
        window_s: float,
        block_s: float,
        exempt: Iterable[IPNetwork] = (),
        key_prefix: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.window_s = window_s
        self.block_s = block_s
        self._redis = client
        self._script = client.register_script(_COUNT_FAILURE) if client is not None else None
        self._key_prefix = f"{key_prefix}authfail:{service}:"
        self._exempt = tuple(exempt)
        self._clock = clock
        self._blocked: dict[str, float] = {}  # address key → clock time its block ends
        self._local: dict[str, tuple[float, int]] = {}  # without Redis: address key → (count's end, count)
        self._redis_down_until = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, service: str, client: redis.asyncio.Redis | None) -> AuthThrottle:
        return cls(
            client,
            service,
            failures=settings.auth_throttle_failures,
            window_s=settings.auth_throttle_window_s,
            block_s=settings.auth_throttle_block_s,
            exempt=parse_networks(settings.auth_throttle_exempt),
            key_prefix=settings.redis_key_prefix,
        )

    def retry_after(self, address: str | None) -> int | None:
        """Seconds until `address` may try again when it is blocked, else None. No I/O: a dict lookup."""
        if not self._blocked or address is None:
            return None
        key = address_key(address, self._exempt)
        until = self._blocked.get(key) if key is not None else None
        if key is None or until is None:
            return None
        left = until - self._clock()
        if left <= 0:
            del self._blocked[key]
            return None
        return max(1, math.ceil(left))

    async def failed(self, address: str | None) -> int | None:
        """Count an unknown key sent from `address`. Seconds to refuse this very request for (429) when the
        address was already over the limit, else None (answer 401; the address may be blocked from now on)."""
        if self.failures <= 0 or address is None:
            return None
        key = address_key(address, self._exempt)
        if key is None:
            return None
        count, lives_s = await self._count(key)
        if count >= self.failures:
            self._blocked[key] = self._clock() + lives_s
            _trim(self._blocked, self._clock(), _block_end)
        return max(1, math.ceil(lives_s)) if count > self.failures else None

    def refusal(self, retry_after: int, key_name: str) -> str:
        """The 429 message: what happened and what to do."""
        return (
            f"too many requests with an unknown {key_name} from this address ({self.failures} within "
            f"{self.window_s:g} s): wait {retry_after} s, then send a valid {key_name}"
        )

    async def _count(self, key: str) -> tuple[int, float]:
        """(failures counted for `key`, seconds that count lives), in Redis when it answers, else here."""
        if self._script is not None and self._clock() >= self._redis_down_until:
            try:
                count, ttl_ms = await self._script(
                    keys=[self._key_prefix + key],
                    args=[int(self.window_s * 1000), self.failures, int(self.block_s * 1000)],
                )
                return int(count), max(int(ttl_ms), 0) / 1000
            except (redis.RedisError, OSError) as exc:
                log.warning(
                    "auth throttle: Redis unavailable, counting in this process for %.0f s: %s", REDIS_RETRY_S, exc
                )
                self._redis_down_until = self._clock() + REDIS_RETRY_S
        return self._count_here(key)

    def _count_here(self, key: str) -> tuple[int, float]:
        now = self._clock()
        end, count = self._local.get(key, (0.0, 0))
        if end <= now:
            end, count = now + self.window_s, 0
        count += 1
        if count == self.failures:
            end = now + self.block_s
        self._local[key] = (end, count)
        _trim(self._local, now, _count_end)
        return count, end - now


def _trim(entries: dict[str, T], now: float, end: Callable[[T], float]) -> None:
    """Keep a dict of address keys under MAX_TRACKED: drop the expired ones, then the oldest (insertion order)
    down to half of it, so that the next trim (a scan of the dict) is many failures away."""
    if len(entries) <= MAX_TRACKED:
        return
    for key in [k for k, v in entries.items() if end(v) <= now]:
        del entries[key]
    if len(entries) > MAX_TRACKED // 2:
        for key in list(entries)[: len(entries) - MAX_TRACKED // 2]:
            del entries[key]


def _block_end(until: float) -> float:
    return until


def _count_end(entry: tuple[float, int]) -> float:
    return entry[0]

"""Answers cached in Redis: key = tenant + hash of the query, value = the answer's JSON and when it was stored.

A hit is served without parsing the answer: the stored JSON carries two markers where the
provenance's `cache` and `elapsed_ms` go (the last two fields of the answer), and a hit replaces
the last occurrence of each with the entry's age.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from typing import Any

import orjson
import redis
from redis.asyncio import Redis as AsyncRedis

from api.models import QueryRequest

log = logging.getLogger("api.cache")
# Random per process, so no dimension value in an answer can look like them.
CACHE_MARK = f"__cache_{secrets.token_hex(8)}__"
ELAPSED_MARK = f"__elapsed_{secrets.token_hex(8)}__"
_CACHE_MARK = orjson.dumps(CACHE_MARK)
_ELAPSED_MARK = orjson.dumps(ELAPSED_MARK)


def query_hash(request: QueryRequest) -> str:
    """Hash of a query's canonical JSON: the same question asked twice hashes the same."""
    canonical = orjson.dumps(request.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:32]


def render(template: bytes, hit: bool, age_s: float, ttl_s: int, elapsed_ms: float) -> bytes:
    """The answer JSON of a template (an answer whose cache info and elapsed time are markers)."""
    info = orjson.dumps({"hit": hit, "age_s": round(age_s, 3), "ttl_s": ttl_s})
    at = template.rindex(_CACHE_MARK)
    body = template[:at] + info + template[at + len(_CACHE_MARK) :]
    at = body.rindex(_ELAPSED_MARK)
    return body[:at] + orjson.dumps(round(elapsed_ms, 3)) + body[at + len(_ELAPSED_MARK) :]


def template(answer: dict[str, Any]) -> bytes:
    """An answer's JSON with markers for its cache info and elapsed time (datetimes as pydantic writes them)."""
    provenance = answer["provenance"]
    provenance["cache"], provenance["elapsed_ms"] = CACHE_MARK, ELAPSED_MARK
    return orjson.dumps(answer, option=orjson.OPT_UTC_Z)


class QueryCache:
    """get/put of answers; a Redis failure is a miss (and a warning), never an error for the caller."""

    def __init__(self, client: AsyncRedis | None, prefix: str = "") -> None:
        self._redis = client
        self._prefix = prefix

    def key(self, tenant_id: str, request: QueryRequest) -> str:
        # The tenant in a hash tag, like the realtime keys: one tenant's keys share a Cluster slot.
        return f"{self._prefix}api:{{{tenant_id}}}:q:{query_hash(request)}"

    async def get(self, tenant_id: str, request: QueryRequest) -> tuple[bytes, float, int] | None:
        """(answer template, age in seconds, ttl it was stored with) or None."""
        if self._redis is None:
            return None
        try:
            raw: Any = await self._redis.get(self.key(tenant_id, request))
        except (redis.RedisError, OSError) as exc:
            log.warning("cache read failed: %s", exc)
            return None
        if raw is None:
            return None
        stored_at, ttl, body = raw.split(b"|", 2)
        return body, max(time.time() - float(stored_at), 0.0), int(ttl)

    async def put(self, tenant_id: str, request: QueryRequest, body: bytes, ttl_s: int) -> bool:
        if self._redis is None:
            return False
        entry = f"{time.time():.6f}|{ttl_s}|".encode() + body
        try:
            await self._redis.set(self.key(tenant_id, request), entry, ex=ttl_s)
        except (redis.RedisError, OSError) as exc:
            log.warning("cache write failed: %s", exc)
            return False
        return True

"""Answers cached in Redis: key = tenant + hash of the query (and of the catalogue it was answered with),
value = the answer's JSON, when it was stored, and what it was computed from.

An entry is `4|<stored at>|<ttl>|<stamp>|<answer>`. The stamp (api/engine/versions.py, Stamp: the lake
snapshot its data is at least as new as, the warehouse tables it read, its range and watermarks) is
compact JSON without `|`; the caller serves the entry only while the engine's Versions say that is still
what the warehouse holds, else computes the answer again and overwrites it. The catalogue's hash in the
key keeps answers of one metric definition from being served under another.

Funnel and experiment answers (api/routes/experiments.py) are kept the same way under keys of their own
kind (`f`, `x`: get and put's `kind`): small answers, stored as their JSON and parsed again on a hit.

A query's hit is served without parsing the answer. The provenance's `cache` and `elapsed_ms` are the last two
fields of the answer (`provenance` is its last field), so a stored answer ends in exactly TAIL, written
with both null; a hit cuts TAIL off the end and writes the entry's own values there. Where they go is
known from the format alone: every process reads every entry, whoever stored it (another worker, the
process before a restart), and nothing inside the answer (a dimension value, a caveat) is ever searched,
so no value can be mistaken for them. An entry of another version, without a stamp, or that does not end
in TAIL (an older format) is a miss.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any, NamedTuple

import orjson
import redis
from pydantic import BaseModel
from redis.asyncio import Redis as AsyncRedis

from analytics_core.catalogue import Catalogue

log = logging.getLogger("api.cache")
TAIL = b'"cache":null,"elapsed_ms":null}}'  # how every stored answer ends: provenance's last two fields, null
ENTRY_VERSION = b"4"  # the entry format: version|stored at|ttl|stamp|answer ending in TAIL (4: rows have `partial`)


class Cached(NamedTuple):
    template: bytes  # the answer, ending in TAIL
    age_s: float
    ttl_s: int
    stamp: bytes  # what it was computed from (api/engine/versions.py, Stamp.encode)


def catalogue_hash(catalogue: Catalogue) -> str:
    """A short hash of the metric catalogue: answers computed under another definition have other keys."""
    return hashlib.sha256(catalogue.model_dump_json().encode()).hexdigest()[:12]


def query_hash(request: BaseModel | dict[str, Any]) -> str:
    """Hash of a question's canonical JSON: the same question asked twice hashes the same.

    Only requests that passed validation get here: their integers are bounded, their strings UTF-8.
    """
    data = request.model_dump(mode="json") if isinstance(request, BaseModel) else request
    canonical = orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z)
    return hashlib.sha256(canonical).hexdigest()[:32]


def render(template: bytes, hit: bool, age_s: float, ttl_s: int, elapsed_ms: float) -> bytes:
    """The answer JSON of a template (an answer ending in TAIL) with its cache info and elapsed time."""
    if not template.endswith(TAIL):
        raise ValueError("not an answer template: it does not end in the cache and elapsed_ms fields")
    info = orjson.dumps({"hit": hit, "age_s": round(age_s, 3), "ttl_s": ttl_s})
    elapsed = orjson.dumps(round(elapsed_ms, 3))
    return b"".join((template[: -len(TAIL)], b'"cache":', info, b',"elapsed_ms":', elapsed, b"}}"))


def template(answer: dict[str, Any]) -> bytes:
    """An answer's JSON with its cache info and elapsed time null, at its end (datetimes as pydantic writes them)."""
    provenance = answer["provenance"]
    if list(answer)[-1] != "provenance" or list(provenance)[-2:] != ["cache", "elapsed_ms"]:
        raise ValueError("the answer's last fields must be provenance.cache and provenance.elapsed_ms")
    provenance["cache"], provenance["elapsed_ms"] = None, None
    body = orjson.dumps(answer, option=orjson.OPT_UTC_Z)
    assert body.endswith(TAIL)
    return body


class QueryCache:
    """get/put of answers; a Redis failure is a miss (and a warning), never an error for the caller."""

    def __init__(self, client: AsyncRedis | None, prefix: str = "", catalogue: str = "") -> None:
        self._redis = client
        self._prefix = prefix
        self._catalogue = catalogue  # a hash of the metric catalogue the answers are computed with

    def key(self, tenant_id: str, request: BaseModel | dict[str, Any], kind: str = "q") -> str:
        """`kind`: q for /query, f for funnel and x for experiment answers."""
        # The tenant in a hash tag, like the realtime keys: one tenant's keys share a Cluster slot.
        catalogue = f"{self._catalogue}:" if self._catalogue and kind == "q" else ""
        return f"{self._prefix}api:{{{tenant_id}}}:{kind}:{catalogue}{query_hash(request)}"

    async def get(self, tenant_id: str, request: BaseModel | dict[str, Any], kind: str = "q") -> Cached | None:
        """The entry (answer template, age in seconds, ttl it was stored with, stamp) or None."""
        if self._redis is None:
            return None
        try:
            raw: Any = await self._redis.get(self.key(tenant_id, request, kind))
        except (redis.RedisError, OSError) as exc:
            log.warning("cache read failed: %s", exc)
            return None
        if raw is None:
            return None
        try:
            version, stored_at, ttl, stamp, body = raw.split(b"|", 4)
            if version != ENTRY_VERSION or (kind == "q" and not body.endswith(TAIL)):
                raise ValueError(f"cache entry of another format (version {version[:8]!r})")
            return Cached(body, max(time.time() - float(stored_at), 0.0), int(ttl), stamp)
        except ValueError as exc:  # an entry this code did not write: computed again and overwritten
            log.warning("cache entry ignored: %s", exc)
            return None

    async def put(
        self,
        tenant_id: str,
        request: BaseModel | dict[str, Any],
        body: bytes,
        ttl_s: int,
        stamp: bytes,
        kind: str = "q",
    ) -> bool:
        if self._redis is None:
            return False
        if b"|" in stamp:
            raise ValueError("a stamp cannot hold the entry separator |")
        entry = b"%s|%.6f|%d|%s|%s" % (ENTRY_VERSION, time.time(), ttl_s, stamp, body)
        try:
            await self._redis.set(self.key(tenant_id, request, kind), entry, ex=ttl_s)
        except (redis.RedisError, OSError) as exc:
            log.warning("cache write failed: %s", exc)
            return False
        return True

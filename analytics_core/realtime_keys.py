"""The Redis key layout of the realtime layer: written by `realtime/`, read by `api/`.

Every key of a tenant carries the tenant id in a hash tag (`{tenant}`), so all of one tenant's
keys live in one Redis Cluster slot and one MULTI/EXEC can cover a batch and its offsets.

- counters  `rt:{T}:c:<minute>`  hash; field = counter_field(metric, dimension set, values);
            counts as integers, sums as integer micro-units (value * SUM_SCALE, rounded), so
            adding in any order gives the same total and reconciles exactly with the warehouse.
- uniques   `rt:{T}:u:<grain>:<bucket>:<field>`  string: the users' sketch in analytics_core/hll.py's
            format, `Sketch.to_bytes()` (the warehouse's format too), kept by realtime/hll.py's merge
            script. The first byte is the format version and kind: 0x10 = sparse, the users' 8-byte
            little-endian DuckDB hashes (append-only: it may repeat hashes, readers take the set;
            exact), 0x11 = dense, 2^16 one-byte registers (65537 bytes; standard error 0.41 %).
            A value of any other first byte, such as b"HYLL" (Redis's native HyperLogLog, this
            key's format before), is not read: readers skip it with a log line (`uniques_sketch`)
            and the consumer's next write to the key replaces it (its users are lost until the
            bucket expires); nothing rebuilds it.
- offsets   `rt:{T}:offsets`  hash; field = Kafka partition, value = last offset applied for T.
- updates   `rt:{T}:updates`  pub/sub channel; a JSON message after each applied batch.
- alive     `rt:alive`  set once the consumer has written; gone = Redis lost its data.
- seen      `rt:{T}:seen:<hour>`  set of event ids applied, by hour received (duplicates count once).

`<minute>` and `<bucket>` are the bucket's UTC start in epoch seconds. The consumer writes uniques
keys of `<grain>` minute only: a longer bucket is the warehouse's sketch before its watermark merged
with the minute sketches after it. Dimensions outside the field's dimension set hold `*`
(analytics_core.catalogue.ALL), as in the warehouse rollups. Keys expire `retention` seconds after
their bucket ends.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from analytics_core.catalogue import Granularity
from analytics_core.hll import Sketch, SketchError
from analytics_core.settings import Settings

log = logging.getLogger(__name__)
SUM_SCALE = 1_000_000  # sums are stored in micro-units
GRAIN_SECONDS: dict[Granularity, int] = {"minute": 60, "hour": 3600, "day": 86400}


def bucket_start(epoch_s: int, grain: Granularity) -> int:
    """UTC start (epoch seconds) of the bucket of this grain holding the instant."""
    size = GRAIN_SECONDS[grain]
    return epoch_s - epoch_s % size


def counter_field(metric: str, dimension_set: str, values: Sequence[str]) -> str:
    """Hash field (or uniques key suffix) of a metric in a dimension set; `values` in catalogue order."""
    return json.dumps([metric, dimension_set, *values], separators=(",", ":"), ensure_ascii=False)


def parse_field(field: str | bytes) -> tuple[str, str, tuple[str, ...]]:
    """(metric, dimension set, dimension values) of a counter_field."""
    metric, dimension_set, *values = json.loads(field)
    return metric, dimension_set, tuple(values)


class RealtimeKeys:
    """Key names for one Redis key prefix (settings.redis_key_prefix)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    @classmethod
    def from_settings(cls, settings: Settings) -> RealtimeKeys:
        return cls(settings.redis_key_prefix)

    def _tenant(self, tenant_id: str) -> str:
        if "{" in tenant_id or "}" in tenant_id:
            raise ValueError(f"tenant id {tenant_id!r} must not contain braces (Redis hash tag)")
        return f"{self.prefix}rt:{{{tenant_id}}}"

    def counters(self, tenant_id: str, minute: int) -> str:
        return f"{self._tenant(tenant_id)}:c:{minute}"

    def uniques(self, tenant_id: str, grain: Granularity, bucket: int, field: str) -> str:
        return f"{self._tenant(tenant_id)}:u:{grain}:{bucket}:{field}"

    def seen(self, tenant_id: str, hour: int) -> str:
        return f"{self._tenant(tenant_id)}:seen:{hour}"

    def offsets(self, tenant_id: str) -> str:
        return f"{self._tenant(tenant_id)}:offsets"

    def updates(self, tenant_id: str) -> str:
        return f"{self._tenant(tenant_id)}:updates"

    @property
    def alive(self) -> str:
        return f"{self.prefix}rt:alive"

    @property
    def stats(self) -> str:
        """Hash of the consumer's running totals: applied, duplicates, too_old, last_applied_at."""
        return f"{self.prefix}rt:stats"

    @property
    def drift(self) -> str:
        """Hash written by the reconciliation: field `<tenant>|<metric>`, value = last drift found."""
        return f"{self.prefix}rt:drift"


def expire_at(bucket: int, grain: Granularity, retention_s: int) -> int:
    """Epoch second at which a key of this bucket expires."""
    return bucket + GRAIN_SECONDS[grain] + retention_s


def uniques_sketch(value: bytes | None, key: str = "") -> Sketch | None:
    """The sketch a uniques key's value holds; None when the key is missing or its value is not a sketch of this
    format (an old native HyperLogLog: logged, read as no users)."""
    if value is None:
        return None
    try:
        return Sketch.from_bytes(value)
    except SketchError as exc:
        log.warning("uniques key %s holds no sketch of this format (%r...): skipped (%s)", key, bytes(value[:4]), exc)
        return None

"""Request and answer bodies of the query API (the OpenAPI schema is generated from these)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

Source = Literal["rollup_day", "rollup_hour", "rollup_minute", "raw", "realtime"]


class Filter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dimension: str = Field(description="A catalogue dimension.")
    op: Literal["eq", "in", "not_in"] = Field(default="eq", description="eq: one value; in / not_in: a list.")
    values: list[str] = Field(min_length=1, max_length=1000, description="Values compared as strings.")


class QueryRequest(BaseModel):
    """One question: metrics over a time range, bucketed, grouped and filtered."""

    model_config = ConfigDict(extra="forbid")

    metrics: list[str] = Field(min_length=1, max_length=20, description="Catalogue metric names.")
    start: datetime = Field(description="Range start, inclusive; without an offset it is read in `timezone`.")
    end: datetime = Field(description="Range end, exclusive; without an offset it is read in `timezone`.")
    granularity: Literal["minute", "hour", "day", "auto"] = Field(
        default="auto",
        description="Bucket size in `timezone`; auto: minute up to 3 hours, hour up to 7 days, else day.",
    )
    group_by: list[str] = Field(default=[], max_length=6, description="Catalogue dimensions.")
    filters: list[Filter] = Field(default=[], max_length=20)
    timezone: str = Field(default="UTC", description="IANA time zone of the buckets, e.g. Asia/Kolkata.")
    limit: int | None = Field(default=None, ge=1, description="Most rows returned (at most the server's cap).")
    top_n: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Keep the N groups largest by the first metric; the rest become 'other'.",
    )


# A plain dataclass, not a model: answers hold thousands of rows, each built in well under a microsecond.
@dataclass(slots=True)
class Row:
    """One bucket and group of an answer."""

    bucket: Annotated[datetime, Field(description="Bucket start in the query's time zone.")]
    dimensions: Annotated[dict[str, str], Field(description="Group-by values; '__other__' for the top-N rest.")]
    values: dict[str, float | None]


class Part(BaseModel):
    """Which source answered which stretch of the range."""

    source: Source
    start: datetime
    end: datetime
    buckets: int = Field(description="Source buckets (rollup rows' windows, realtime minutes) read.")
    metrics: list[str] = Field(default=[], description="The metrics this part answered; empty = all of them.")


class Approximation(BaseModel):
    method: Literal["hyperloglog", "exact"]
    relative_error: float = Field(description="Bound on the relative error (about two standard errors).")


class CacheInfo(BaseModel):
    hit: bool
    age_s: float = 0.0
    ttl_s: int = 0


class Provenance(BaseModel):
    parts: list[Part]
    watermark: datetime | None = Field(description="Warehouse complete up to here; later numbers are realtime.")
    realtime: bool = Field(description="Realtime numbers past the watermark were included.")
    realtime_unavailable: str | None = Field(default=None, description="Why realtime numbers could not be used.")
    approximate: dict[str, Approximation] = Field(default={}, description="Per metric; absent = exact.")
    incomplete: list[str] = Field(default=[], description="Caveats, e.g. a bucket without its newest events.")
    cache: CacheInfo = CacheInfo(hit=False)
    elapsed_ms: float = 0.0


class QueryResult(BaseModel):
    metrics: list[str]
    granularity: Literal["minute", "hour", "day"]
    timezone: str
    group_by: list[str]
    rows: list[Row]
    truncated: bool = Field(default=False, description="More rows existed than the limit.")
    provenance: Provenance


def dump(result: QueryResult) -> dict[str, Any]:
    """The answer as data for orjson (with OPT_UTC_Z), fields in the schema's order, as pydantic writes it.

    The rows become plain dicts with their bucket written once per distinct bucket (as orjson and
    pydantic write datetimes: `Z` for UTC, the offset otherwise): a fraction of the cost of pydantic,
    or of orjson, serialising thousands of rows and their datetimes; the rest goes through pydantic.
    """
    out = result.model_dump(mode="json", exclude={"rows"})
    written: dict[datetime, str] = {}
    rows = []
    for row in result.rows:
        bucket = written.get(row.bucket)
        if bucket is None:
            bucket = written[row.bucket] = orjson.dumps(row.bucket, option=orjson.OPT_UTC_Z)[1:-1].decode()
        rows.append({"bucket": bucket, "dimensions": row.dimensions, "values": row.values})
    return {name: rows if name == "rows" else out[name] for name in QueryResult.model_fields}

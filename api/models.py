"""Request and answer bodies of the query API (the OpenAPI schema is generated from these)."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import Annotated, Any, Literal, get_type_hints

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, create_model
from pydantic_core import PydanticCustomError

from analytics_core.funnels import Funnel
from analytics_core.stats.experiments import Row as VariantRow

Source = Literal["rollup_day", "rollup_hour", "rollup_minute", "raw", "realtime"]
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_8601(value: Any) -> Any:
    """A time as ISO 8601 text (a date, or a date and time): a number is refused, not guessed as s or ms."""
    if isinstance(value, datetime) or (isinstance(value, str) and _ISO_DATE.match(value)):
        return value
    raise PydanticCustomError("iso_8601", "an ISO 8601 date or date-time is expected, e.g. 2026-11-01T09:30:00+01:00")


# A date or a date-time, with or without an offset (without: read in the query's time zone).
Time = Annotated[
    datetime,
    BeforeValidator(_iso_8601),
    WithJsonSchema({"anyOf": [{"type": "string", "format": "date-time"}, {"type": "string", "format": "date"}]}),
]


class Filter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dimension: str = Field(description="A catalogue dimension.")
    op: Literal["eq", "in", "not_in"] = Field(default="eq", description="eq: one value; in / not_in: a list.")
    values: list[str] = Field(min_length=1, max_length=1000, description="Values compared as strings.")


class QueryRequest(BaseModel):
    """One question: metrics over a time range, bucketed, grouped and filtered."""

    model_config = ConfigDict(extra="forbid")

    metrics: list[str] = Field(min_length=1, max_length=20, description="Catalogue metric names.")
    start: Time = Field(description="Range start, inclusive; without an offset it is read in `timezone`.")
    end: Time = Field(description="Range end, exclusive; without an offset it is read in `timezone`.")
    granularity: Literal["minute", "hour", "day", "total", "auto"] = Field(
        default="auto",
        description="Bucket size in `timezone`; auto: minute up to 3 hours, hour up to 7 days, else day; total: one"
        " bucket, the whole range (unique users over all of it, each user once).",
    )
    align: Literal["exact", "buckets"] = Field(
        default="exact",
        description="exact: the rows cover [start, end) and no more; a bucket cut by start or end is counted over"
        " its part inside the range and marked `partial: true`. buckets: the range is widened to whole buckets"
        " (the answer's `start` and `end` say so).",
    )
    group_by: list[str] = Field(default=[], max_length=6, description="Catalogue dimensions.")
    filters: list[Filter] = Field(default=[], max_length=20)
    timezone: str = Field(default="UTC", description="IANA time zone of the buckets, e.g. Asia/Kolkata.")
    limit: int | None = Field(default=None, ge=1, description="Most rows returned (at most the server's cap).")
    top_n: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Keep the N groups largest by the first metric; the rest add up to one row per bucket, marked"
        " `rest: true`, its dimension values null.",
    )


# A plain dataclass, not a model: answers hold thousands of rows, each built in well under a microsecond.
@dataclass(slots=True)
class Row:
    """One bucket and group of an answer."""

    bucket: Annotated[
        datetime,
        Field(
            description="Bucket start in the query's time zone, with the offset in force then: the repeated hour of"
            " a fall-back day is two buckets, e.g. 01:00:00-04:00 and 01:00:00-05:00 in America/New_York."
        ),
    ]
    dimensions: Annotated[
        dict[str, str | None],
        Field(
            description="Group-by values; null where the group's events have no value for the dimension (e.g. no"
            " page), and every value null in the top-N rest row, which `rest` marks."
        ),
    ]
    values: dict[str, float | None]
    rest: Annotated[
        bool,
        Field(
            description="True for the one row per bucket that adds up the groups outside the top N (top_n), always"
            " last in its bucket; false for every real group, including one whose dimension values are null."
        ),
    ] = False
    partial: Annotated[
        bool,
        Field(
            description="True when the range cuts this bucket (the first one after a start inside it, the last one"
            " before an end inside it): its values cover only the part inside the range, from `bucket` on or up to"
            " the answer's `end`."
        ),
    ] = False


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
    granularity: Literal["minute", "hour", "day", "total"]
    timezone: str
    start: datetime = Field(
        description="Start of the range the rows cover, in `timezone`: the one asked, or its"
        " bucket's start with align=buckets."
    )
    end: datetime = Field(description="End (exclusive) of the range the rows cover.")
    group_by: list[str]
    rows: list[Row]
    truncated: bool = Field(default=False, description="More rows existed than the limit.")
    provenance: Provenance


def dump(result: QueryResult) -> dict[str, Any]:
    """The answer as data for orjson (with OPT_UTC_Z), fields in the schema's order, as pydantic writes it.

    The rows become plain dicts with their bucket written once per bucket object (as orjson and
    pydantic write datetimes: `Z` for UTC, the offset otherwise): a fraction of the cost of pydantic,
    or of orjson, serialising thousands of rows and their datetimes; the rest goes through pydantic.
    The rows of one bucket share its datetime (answer.build_result), so the text is remembered by the
    object's identity, never by equality: two aware datetimes of one zone with the same wall time are
    equal and hash alike whatever their `fold`, yet on a fall-back day they are an hour apart, with
    different offsets (01:00-04:00 and 01:00-05:00 in New York). An equal datetime that is another
    object is written again: it costs a little, it cannot borrow another bucket's text.
    """
    out = result.model_dump(mode="json", exclude={"rows"})
    written: dict[int, str] = {}  # id of a bucket datetime (alive in result.rows throughout) -> its text
    rows = []
    for row in result.rows:
        bucket = written.get(id(row.bucket))
        if bucket is None:
            bucket = written[id(row.bucket)] = orjson.dumps(row.bucket, option=orjson.OPT_UTC_Z)[1:-1].decode()
        rows.append(
            {
                "bucket": bucket,
                "dimensions": row.dimensions,
                "values": row.values,
                "rest": row.rest,
                "partial": row.partial,
            }
        )
    return {name: rows if name == "rows" else out[name] for name in QueryResult.model_fields}


class ErrorBody(BaseModel):
    """Every refusal: what is wrong and, for a bad request, the field and the rule it breaks."""

    error: str = Field(description="What is wrong, for people.")
    field: str | None = Field(default=None, description="The request field at fault, e.g. filters[0].values.")
    rule: str | None = Field(default=None, description="The rule it breaks, e.g. max_buckets, iana_zone.")


class CatalogueMetric(BaseModel):
    name: str
    kind: Literal["count", "sum", "unique", "ratio"]
    description: str
    additive: bool
    approximate: bool
    bots_included: bool


class CatalogueDimension(BaseModel):
    name: str
    description: str
    in_rollups: bool


class Limits(BaseModel):
    max_rows: int
    max_buckets: int
    max_range_days: int
    max_filter_values: int = Field(description="Filter values a query may hold, over all its filters.")
    max_raw_range_days: int = Field(description="Longest range answered from raw events.")
    max_cells: int = Field(description="Bucket and group cells (or source rows) a query may read.")
    rate_limit_queries: int = Field(description="Queries a read key may ask per window; 0: no limit.")
    rate_limit_window_s: float


class CatalogueAnswer(BaseModel):
    """GET /api/v1/metrics: what can be asked."""

    metrics: list[CatalogueMetric]
    dimensions: list[CatalogueDimension]
    granularities: list[str]
    filters: list[str]
    limits: Limits


# -- funnels and experiments (docs/FUNNELS.md, docs/EXPERIMENTS.md) -------------------------------


class FunnelStepInfo(BaseModel):
    event_type: str
    where: dict[str, list[str]] = Field(description="Field -> values one of which the event's field must have.")
    title: str


class FunnelInfo(BaseModel):
    key: str
    title: str
    description: str
    steps: list[FunnelStepInfo]
    window_s: int = Field(description="Conversion window from the first step, in seconds; its end counts.")
    order: Literal["ordered", "strict", "any"]
    exclusions: list[dict[str, Any]]
    hold_constant: str | None
    breakdowns: list[str]


class FunnelList(BaseModel):
    funnels: list[FunnelInfo]


class ExperimentMetricInfo(BaseModel):
    key: str
    title: str
    kind: Literal["conversion", "continuous"]
    event_type: str
    value: str | None
    within_s: int
    cuped: bool
    higher_is_better: bool
    primary: bool


class ExperimentInfo(BaseModel):
    key: str
    title: str
    description: str
    variants: dict[str, float] = Field(description="Planned share of users per variant.")
    control: str
    start: datetime
    end: datetime | None
    sequential: bool
    alpha: float
    metrics: list[ExperimentMetricInfo]


class ExperimentList(BaseModel):
    experiments: list[ExperimentInfo]


# One variant against control for one metric (docs/EXPERIMENTS.md, Output): the fields of
# analytics_core.stats.experiments.Row (VariantRow here), the significance table's columns.
_VARIANT_FIELDS: dict[str, Any] = {f.name: (get_type_hints(VariantRow)[f.name], ...) for f in fields(VariantRow)}
SignificanceRow: Any = create_model(
    "SignificanceRow",
    __doc__="One variant against control for one metric; null: cannot be computed (cannot_compute says why).",
    **_VARIANT_FIELDS,
)


class ExperimentResult(BaseModel):
    experiment: ExperimentInfo
    users: dict[str, int] = Field(description="Analysed users per variant (first exposure, one variant only).")
    excluded: dict[str, int] = Field(description="Exposed users left out, per reason.")
    srm_p_value: float | None = Field(description="Chi-square of the users per variant against the planned split.")
    verdicts: dict[str, str] = Field(description="Per non-control variant, the primary metric's verdict.")
    rows: list[SignificanceRow] = Field(description="Primary metric first, then the guardrails.")
    built_at: datetime | None = Field(description="When the experiment's tables were last built (hourly).")
    cache: CacheInfo = CacheInfo(hit=False)
    elapsed_ms: float = 0.0


class FunnelQuery(BaseModel):
    """A defined funnel (`funnel`) or an ad-hoc one (`definition`) over first steps in [start, end), UTC."""

    model_config = ConfigDict(extra="forbid")

    funnel: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,62}$", description="A defined funnel's key.")
    definition: Funnel | None = Field(default=None, description="An ad-hoc funnel, as in dbt_project.yml.")
    start: Time = Field(description="First steps from here (inclusive); without an offset it is UTC.")
    end: Time = Field(description="First steps until here (exclusive).")
    granularity: Literal["day", "total"] = Field(
        default="day", description="day: a row per cohort day (UTC); total: the whole range (a user counts once a day)."
    )
    breakdown: Literal["country", "device", "page", "library"] | None = Field(
        default=None, description="Rows per value of this dimension of the first step's event."
    )


class FunnelRow(BaseModel):
    cohort_day: date | None = Field(description="UTC day of the first step; null with granularity total.")
    breakdown_value: str | None
    entered: int
    reached: list[int] = Field(description="Users reaching each step (the first is `entered`).")
    pending: int = Field(description="Users whose window is still open: neither converted nor dropped.")
    pending_at: list[int] = Field(description="Pending users by the last step they reached (1 .. steps - 1).")
    excluded: int = Field(description="Users whose every attempt of the day was left by an exclusion step.")
    median_s: list[float | None] = Field(description="Median seconds from step k to k + 1.")
    p90_s: list[float | None] = Field(description="90th percentile of the seconds from step k to k + 1.")


class FunnelAnswer(BaseModel):
    funnel: str | None
    source: Literal["fct_funnel_daily", "raw_events"] = Field(
        description="The defined funnel's daily table, or the staged events (ad-hoc funnels, total, not whole days)."
    )
    steps: list[FunnelStepInfo]
    start: datetime
    end: datetime
    granularity: Literal["day", "total"]
    breakdown: str | None
    rows: list[FunnelRow]
    truncated: bool = False
    as_of: datetime | None = Field(description="Pending users are those whose window was open at this time.")
    note: str | None = Field(
        default=None, description="Why a defined funnel was counted from the staged events rather than its table."
    )
    cache: CacheInfo = CacheInfo(hit=False)
    elapsed_ms: float = 0.0


# -- dashboards (docs/DASHBOARDS.md) ---------------------------------------------------------------


class DashboardTileInfo(BaseModel):
    id: str
    kind: Literal["series", "number", "breakdown", "funnel", "experiment", "live"]
    title: str
    width: int = Field(description="Layout hint: columns of a 12-column grid.")


class DashboardInfo(BaseModel):
    id: str
    version: int
    title: str
    description: str
    range: str = Field(description="The default range, relative (e.g. last_7d).")
    timezone: str = Field(description="The default time zone.")
    definition_hash: str = Field(description="Hash of the definition as the API loaded it (part of the cache key).")
    tiles: list[DashboardTileInfo]


class DashboardList(BaseModel):
    dashboards: list[DashboardInfo]


class ViewRange(BaseModel):
    """The range a load covers, resolved: exactly which [start, end) it is, and up to when it is counted."""

    expression: str = Field(description="As asked: a relative range (last_7d) or <start>/<end>.")
    start: datetime = Field(
        description="Start (inclusive) in the load's time zone: a unit boundary for a relative range."
    )
    end: datetime = Field(description="End (exclusive); a relative range ends with the unit that holds now.")
    counted_until: datetime = Field(
        description="Metric tiles count [start, counted_until): `end`, or for a range reaching now the end of the"
        " current minute (nothing later is asked)."
    )
    open: bool = Field(description="The range reaches now: its numbers still change (cached 60 s at most).")
    timezone: str


class TileError(BaseModel):
    """Why a tile has no answer with these parameters (the other tiles are answered)."""

    status: Literal[400, 503] = Field(description="400: these parameters cannot be answered for this tile; 503: retry.")
    error: str
    field: str | None = Field(
        description="The load's parameter at fault (range, filter[0], timezone) or the tile's field."
    )
    rule: str | None


class NumberValue(BaseModel):
    """A number tile's value over the range and, unless the tile compares nothing, the previous period's."""

    metric: str
    value: float | None
    start: datetime
    end: datetime
    previous: float | None = None
    change: float | None = Field(
        default=None, description="(value - previous) / previous; null when previous is 0 or null."
    )
    previous_start: datetime | None = None
    previous_end: datetime | None = None


class TileProvenance(BaseModel):
    sources: list[str] = Field(description="The sources read: rollup_day, ..., realtime, raw; or the tables read.")
    watermark: datetime | None = Field(
        description="Metric tiles: warehouse complete up to here; later numbers are realtime."
    )
    as_of: datetime | None = Field(
        description="Funnels: pending users as of; experiments: tables built at; live: read at."
    )
    realtime: bool
    approximate: dict[str, Approximation] = Field(
        description="Per metric whose numbers are estimates, the error bound."
    )
    incomplete: list[str] = Field(description="Caveats, as the endpoint's answers give them.")
    notes: list[str] = Field(description="What of the load does not apply to this tile (range widened, no filters).")
    cache: CacheInfo


class DashboardTile(BaseModel):
    id: str
    kind: Literal["series", "number", "breakdown", "funnel", "experiment", "live"]
    title: str
    description: str
    width: int
    endpoint: str = Field(description="The endpoint whose engine answered, e.g. POST /api/v1/query.")
    asked: list[dict[str, Any]] = Field(
        description="The requests asked of it (a number tile: the range, then the previous period): the same request"
        " to that endpoint answers the same numbers."
    )
    answers: list[dict[str, Any]] | None = Field(
        description="Its answers, as that endpoint answers (QueryResult, FunnelAnswer, ExperimentResult, the live"
        " counters), without their cache and elapsed_ms; null with `error`."
    )
    number: NumberValue | None = Field(description="Number tiles: the value, the previous period's, the change.")
    provenance: TileProvenance | None
    error: TileError | None


class DashboardAnswer(BaseModel):
    """GET /api/v1/dashboards/{id}: every tile of a dashboard, for one range, time zone and set of filters."""

    dashboard: DashboardInfo
    range: ViewRange
    filters: list[Filter] = Field(description="The load's filters, added to every metric tile's own.")
    tiles: list[DashboardTile]
    computed_at: datetime = Field(description="When the tiles were computed (a cache hit: when the entry was).")
    cache: CacheInfo
    elapsed_ms: float

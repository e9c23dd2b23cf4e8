"""What a query may cost, judged from its parameters before anything of its size is built; the cache format
any process can read; the OpenAPI document as the API answers."""

from __future__ import annotations

import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from analytics_core.catalogue import get_catalogue
from analytics_core.realtime_keys import RealtimeKeys
from analytics_core.settings import Settings
from api.app import create_app
from api.cache import TAIL, render, template
from api.engine.errors import QueryError
from api.engine.realtime_reads import MAX_NAMED_FIELDS, RealtimeSource
from api.engine.validation import Condition, check
from api.models import CacheInfo, Part, Provenance, QueryRequest, QueryResult, Row, dump

SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]
BASE: dict[str, Any] = {"metrics": ["events"], "start": "2026-03-01T00:00:00Z", "end": "2026-03-02T00:00:00Z"}


def refused(**changes: Any) -> tuple[str, str]:
    with pytest.raises(QueryError) as error:
        check("tenant_a", QueryRequest.model_validate({**BASE, **changes}), get_catalogue(), SETTINGS)
    return error.value.field, error.value.rule


@pytest.mark.parametrize(
    ("changes", "field", "rule"),
    [
        ({"timezone": "America"}, "timezone", "iana_zone"),  # a directory of the zone database
        ({"timezone": "Europe/" + "x" * 300}, "timezone", "iana_zone"),  # a file name too long
        ({"timezone": ""}, "timezone", "iana_zone"),
        ({"timezone": "a\x00b"}, "timezone", "iana_zone"),
        ({"timezone": "zone.tab"}, "timezone", "iana_zone"),  # a file of the database that is no zone
        ({"limit": 18446744073709551616}, "limit", "max_rows"),  # 2**64: no orjson hashing gets it
        ({"limit": 10**40}, "limit", "max_rows"),
        (
            {"start": "9999-12-30", "end": "9999-12-31T23:59:59", "timezone": "Pacific/Kiritimati"},
            "start",
            "supported_range",
        ),
        ({"start": "0001-01-01T00:00:00", "timezone": "Asia/Tokyo"}, "start", "supported_range"),  # year 0 in UTC
        ({"start": "2026-03-01T00:00:00Z", "end": "9999-12-31T23:59:59-14:00"}, "end", "supported_range"),
        ({"start": "1899-12-31T00:00:00Z"}, "start", "supported_range"),
        (
            {
                "filters": [
                    {"dimension": d, "op": "in", "values": [str(i) for i in range(400)]} for d in ("a", "b", "c")
                ]
            },
            "filters",
            "max_filter_values",
        ),
        (
            {"filters": [{"dimension": "country", "op": "in", "values": ["US", "\ud800"]}]},
            "filters[0].values[1]",
            "utf8",
        ),
        (
            {"group_by": ["page"], "start": "2026-01-01T00:00:00Z", "end": "2026-06-01T00:00:00Z"},
            "end",
            "max_raw_range_days",
        ),
        (
            {"metrics": ["active_users"], "group_by": ["country", "device"], "end": "2026-07-01T00:00:00Z"},
            "end",
            "max_raw_range_days",
        ),
        ({"granularity": "minute", "end": "2026-03-08T00:00:00Z"}, "granularity", "max_buckets"),
    ],
)
def test_costly_or_impossible_requests_are_refused_by_their_parameters(
    changes: dict[str, Any], field: str, rule: str
) -> None:
    assert refused(**changes) == (field, rule)


def test_limits_hold_exactly_at_their_values() -> None:
    catalogue = get_catalogue()
    most = SETTINGS.api_max_filter_values
    dims = ("event_type", "country", "device")
    values = [[f"{d}{i}" for i in range(most // 3 + (1 if j < most % 3 else 0))] for j, d in enumerate(dims)]
    filters = [{"dimension": d, "op": "in", "values": v} for d, v in zip(dims, values, strict=True)]
    assert sum(len(v) for v in values) == most
    check("t", QueryRequest.model_validate({**BASE, "filters": filters}), catalogue, SETTINGS)
    raw = {"group_by": ["page"], "end": "2026-06-02T00:00:00Z"}  # 93 days: the most raw events may answer
    check("t", QueryRequest.model_validate({**BASE, **raw}), catalogue, SETTINGS)
    limit = {"limit": SETTINGS.api_max_rows}
    check("t", QueryRequest.model_validate({**BASE, **limit}), catalogue, SETTINGS)
    assert refused(limit=SETTINGS.api_max_rows + 1) == ("limit", "max_rows")


def test_the_check_costs_the_size_of_the_parameters_not_of_their_product() -> None:
    """200 values on each of three dimensions (finding: 1.6 s and +540 MB in the realtime path)."""
    filters = [
        {"dimension": d, "op": "in", "values": [f"{d}-{i}" for i in range(333)]}
        for d in ("event_type", "country", "device")
    ]
    request = QueryRequest.model_validate({**BASE, "filters": filters, "group_by": ["event_type", "country"]})
    tracemalloc.start()
    began = time.perf_counter()
    check("t", request, get_catalogue(), SETTINGS)
    conditions = [Condition(f.dimension, f.op, tuple(f.values)) for f in request.filters]
    source = RealtimeSource(None, RealtimeKeys(), get_catalogue())  # type: ignore[arg-type]
    combos = source.fixed_combos(("event_type", "country", "device"), conditions)
    elapsed = time.perf_counter() - began
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert combos is None  # 333**3 combinations: counted, never built; the counters are read whole instead
    assert elapsed < 0.2 and peak < 5_000_000, (elapsed, peak)
    few = [Condition("country", "in", ("US", "DE")), Condition("device", "in", ("mobile",))]
    assert source.fixed_combos(("country", "device"), few) is not None
    assert MAX_NAMED_FIELDS <= 1000


HOSTILE = [
    TAIL.decode(),
    '"cache":null,"elapsed_ms":null}}',
    "__cache_0123456789abcdef__",
    "__elapsed_0123456789abcdef__",
    '"},"provenance":{"cache":',
    "\\",
    "\x00\x1f\n\r\t",
    "\u2028\u2029ü🙂",
    "__other__",
]


def _result(values: list[str | None]) -> QueryResult:
    start = datetime(2026, 3, 7, tzinfo=UTC)
    rows = [Row(start + timedelta(hours=i), {"country": v}, {"events": float(i)}) for i in range(3) for v in values]
    provenance = Provenance(
        parts=[Part(source="rollup_hour", start=start, end=start + timedelta(hours=3), buckets=3)],
        watermark=start,
        realtime=False,
        incomplete=list(HOSTILE),
        realtime_unavailable=TAIL.decode(),
    )
    return QueryResult(
        metrics=["events"],
        granularity="hour",
        timezone="UTC",
        start=start,
        end=start + timedelta(hours=3),
        group_by=["country"],
        rows=rows,
        provenance=provenance,
    )


def test_hostile_dimension_values_and_caveats_render_from_any_process() -> None:
    """The stored answer says where cache and elapsed_ms go by its format alone: no value inside can move them."""
    result = _result([*HOSTILE, None])
    stored = template(dump(result))
    assert stored.endswith(TAIL)
    expected = result.model_copy(deep=True)
    expected.provenance.cache = CacheInfo(hit=True, age_s=1.5, ttl_s=60)
    expected.provenance.elapsed_ms = 0.25
    assert render(stored, True, 1.5, 60, 0.25) == expected.model_dump_json().encode()
    answer = orjson.loads(render(stored, True, 1.5, 60, 0.25))
    assert [r["dimensions"]["country"] for r in answer["rows"][: len(HOSTILE) + 1]] == [*HOSTILE, None]
    assert answer["provenance"]["incomplete"] == HOSTILE


def test_an_entry_of_another_format_is_not_rendered() -> None:
    old = b'{"provenance":{"cache":"__cache_0123__","elapsed_ms":"__elapsed_0123__"}}'
    with pytest.raises(ValueError, match="not an answer template"):
        render(old, True, 0.0, 60, 0.0)


def test_openapi_says_400_not_422_and_the_real_media_types() -> None:
    document = create_app(SETTINGS).openapi()
    paths = document["paths"]
    statuses = {(p, m): set(op["responses"]) for p, ops in paths.items() for m, op in ops.items()}
    assert not any("422" in s for s in statuses.values())
    assert statuses[("/api/v1/query", "post")] == {"200", "400", "401", "413", "429", "503"}
    assert statuses[("/readyz", "get")] == {"200", "503"}
    assert set(paths["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    assert "ValidationError" not in document["components"]["schemas"]
    error = paths["/api/v1/query"]["post"]["responses"]["400"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/ErrorBody"}
    for path in ("/api/v1/query", "/api/v1/metrics"):
        operation = next(iter(paths[path].values()))
        assert operation["security"] and "401" in operation["responses"]
    body = document["components"]["schemas"]["QueryRequest"]["properties"]
    assert set(body["metrics"]["items"]["enum"]) == set(get_catalogue().metrics)
    assert set(body["group_by"]["items"]["enum"]) == set(get_catalogue().dimensions)
    assert {"type": "integer", "minimum": 1, "maximum": SETTINGS.api_max_rows}.items() <= body["limit"]["anyOf"][
        0
    ].items()
    retry = paths["/api/v1/query"]["post"]["responses"]["429"]["headers"]
    assert "Retry-After" in retry


@pytest.mark.parametrize("value", [1_700_000_000, 1.7e9, "1700000000", True])
def test_times_are_iso_8601_text_never_numbers(value: Any) -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        QueryRequest.model_validate({**BASE, "start": value})

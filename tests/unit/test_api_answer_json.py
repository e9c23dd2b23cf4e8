"""The answer JSON the API stores and sends equals pydantic's own serialisation of the QueryResult."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest

from api.cache import render, template
from api.models import Approximation, CacheInfo, Part, Provenance, QueryResult, Row, dump


def _result(tz: ZoneInfo | type[UTC]) -> QueryResult:
    start = datetime(2026, 3, 7, tzinfo=tz)  # the New York rows cross the DST change of 2026-03-08
    rows = [
        Row(
            start + timedelta(hours=i),
            {"country": c},
            {"revenue": 12.5 * i, "purchases": float(i), "conversion_rate": None if i % 3 else 0.25},
        )
        for i in range(50)
        for c in ("US", "IN", "__other__")
    ]
    provenance = Provenance(
        parts=[Part(source="rollup_hour", start=start, end=start + timedelta(days=2), buckets=48)],
        watermark=datetime(2026, 3, 9, 12, 0, 0, 123456, tzinfo=UTC),
        realtime=True,
        approximate={"active_users": Approximation(method="hyperloglog", relative_error=0.02)},
        incomplete=["a caveat"],
        elapsed_ms=3.25,
    )
    return QueryResult(
        metrics=["revenue", "purchases", "conversion_rate"],
        granularity="hour",
        timezone=str(tz),
        start=start,
        end=start + timedelta(days=2),
        group_by=["country"],
        rows=rows,
        truncated=True,
        provenance=provenance,
    )


@pytest.mark.parametrize("tz", [UTC, ZoneInfo("UTC"), ZoneInfo("Asia/Kolkata"), ZoneInfo("America/New_York")])
def test_rendered_answer_equals_pydantics_json(tz: ZoneInfo | type[UTC]) -> None:
    result = _result(tz)
    rendered = render(template(dump(result)), False, 0.0, 60, 3.25)
    expected = result.model_copy(deep=True)
    expected.provenance.cache = CacheInfo(hit=False, age_s=0.0, ttl_s=60)
    assert rendered == expected.model_dump_json().encode()  # byte for byte, field order included


def test_rendered_hit_carries_its_cache_info() -> None:
    result = _result(UTC)
    answer = orjson.loads(render(template(dump(result)), True, 12.3456, 3600, 0.5))
    assert answer["provenance"]["cache"] == {"hit": True, "age_s": 12.346, "ttl_s": 3600}
    assert answer["provenance"]["elapsed_ms"] == 0.5
    assert answer["rows"][0] == {
        "bucket": "2026-03-07T00:00:00Z",
        "dimensions": {"country": "US"},
        "values": {"revenue": 0.0, "purchases": 0.0, "conversion_rate": 0.25},
        "rest": False,
        "partial": False,
    }

"""Query validation against the catalogue and the server's limits; what reaches SQL and what does not."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from analytics_core.catalogue import get_catalogue
from analytics_core.settings import Settings
from api.engine.errors import QueryError
from api.engine.planner import Piece
from api.engine.sql.raw_events import raw_sql
from api.engine.sql.rollups import RollupRead, rollup_sql
from api.engine.validation import Condition, validate
from api.models import QueryRequest

SETTINGS = Settings(_env_file=None, api_max_rows=500, api_max_buckets=1000, api_max_range_days=400)  # type: ignore[call-arg]
BASE = {"metrics": ["events"], "start": "2026-03-01T00:00:00Z", "end": "2026-03-02T00:00:00Z"}


def refused(**changes: object) -> tuple[str, str]:
    with pytest.raises(QueryError) as error:
        validate("tenant_a", QueryRequest.model_validate({**BASE, **changes}), get_catalogue(), SETTINGS)
    assert error.value.field in str(error.value) and error.value.rule in str(error.value)
    return error.value.field, error.value.rule


@pytest.mark.parametrize(
    ("changes", "field", "rule"),
    [
        ({"metrics": ["events", "bounces"]}, "metrics[1]", "catalogue_metric"),
        ({"metrics": ["events", "events"]}, "metrics", "unique"),
        ({"group_by": ["country", "browser"]}, "group_by[1]", "catalogue_dimension"),
        ({"group_by": ["country; DROP TABLE x"]}, "group_by[0]", "catalogue_dimension"),
        (
            {"filters": [{"dimension": "os", "op": "eq", "values": ["x"]}]},
            "filters[0].dimension",
            "catalogue_dimension",
        ),
        (
            {"filters": [{"dimension": "country", "op": "eq", "values": ["US", "DE"]}]},
            "filters[0].values",
            "eq_one_value",
        ),
        ({"end": "2026-03-01T00:00:00Z"}, "end", "after_start"),
        ({"end": "2027-06-01T00:00:00Z"}, "end", "max_range_days"),
        ({"granularity": "minute", "end": "2026-03-05T00:00:00Z"}, "granularity", "max_buckets"),
        ({"timezone": "Europe/Atlantis"}, "timezone", "iana_zone"),
        ({"timezone": "../../etc/passwd"}, "timezone", "iana_zone"),
        ({"limit": 501}, "limit", "max_rows"),
        ({"top_n": 3}, "top_n", "needs_group_by"),
    ],
)
def test_each_rule_names_its_field(changes: dict, field: str, rule: str) -> None:
    assert refused(**changes) == (field, rule)


def test_naive_times_are_read_in_the_query_zone_and_ratio_parts_are_fetched() -> None:
    request = QueryRequest.model_validate(
        {**BASE, "metrics": ["conversion_rate"], "start": "2026-03-01T00:00:00", "timezone": "Asia/Kolkata"}
    )
    query = validate("tenant_a", request, get_catalogue(), SETTINGS)
    assert query.buckets.start == datetime(2026, 2, 28, 18, 30, tzinfo=UTC).timestamp()
    assert query.base_metrics == ("purchasers", "active_users")
    assert query.buckets.grain == "hour"  # auto: 29.5 hours
    assert query.limit == 500


def test_fractions_of_a_second_are_dropped_and_the_range_counted_is_the_buckets_bounds() -> None:
    request = QueryRequest.model_validate(
        {**BASE, "start": "2026-03-01T10:00:08.583+00:00", "end": "2026-03-01T12:30:00.999Z", "granularity": "hour"}
    )
    buckets = validate("tenant_a", request, get_catalogue(), SETTINGS).buckets
    assert (buckets.start, buckets.end) == (
        datetime(2026, 3, 1, 10, 0, 8, tzinfo=UTC).timestamp(),
        datetime(2026, 3, 1, 12, 30, tzinfo=UTC).timestamp(),
    )
    assert buckets.first_partial and buckets.last_partial and buckets.count == 3
    assert refused(start="2026-03-01T10:00:00.2Z", end="2026-03-01T10:00:00.9Z") == ("end", "after_start")


INJECTION = "x' OR 1=1 --"


def test_filter_values_and_the_tenant_are_bound_parameters_never_sql_text() -> None:
    request = QueryRequest.model_validate(
        {
            **BASE,
            "metrics": ["events", "active_users"],
            "group_by": ["page"],
            "filters": [{"dimension": "country", "op": "in", "values": [INJECTION, "US"]}],
            "top_n": 2,
        }
    )
    tenant = "tenant_a' OR '1'='1"
    query = validate(tenant, request, get_catalogue(), SETTINGS)
    sql, params = raw_sql(query, get_catalogue(), "lake", query.base_metrics, query.buckets.segments(), [("/",)])
    assert INJECTION not in sql and tenant not in sql and "'US'" not in sql
    assert INJECTION in params and tenant in params
    assert sql.count("?") == sum(1 for _ in params)


def test_rollup_sql_binds_every_value() -> None:
    pieces = [Piece("day", 1_772_323_200, 1_772_409_600, 0, "complete")]
    read = RollupRead(
        tenant_id="t' --",
        set_name="country",
        group_by=("country",),
        filters=(Condition("country", "not_in", (INJECTION,)),),
        additive=("events",),
        unique=("active_users",),
        additive_pieces=pieces,
        unique_pieces=pieces,
        one_row_per_group=False,
    )
    built = rollup_sql(read, "lake", None, [(INJECTION,)])
    assert built is not None
    sql, params = built
    assert INJECTION not in sql and "t' --" not in sql
    assert sql.count("?") == len(params)

"""Dashboard definitions (analytics_core/dashboards.py) and a load's parameters (api/engine/dashboard_params.py):
the project's files load, every rule is refused naming the file, the field and the rule, relative ranges resolve
to whole units in any zone (DST days too), and what a load hashes to is stable."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from analytics_core.catalogue import get_catalogue
from analytics_core.dashboards import (
    DASHBOARDS_DIR,
    MAX_TILES,
    DashboardError,
    NumberTile,
    get_dashboards,
    load_dashboards,
    parse_dashboard,
)
from analytics_core.settings import Settings
from api.cache import query_hash
from api.engine import dashboards as tiles
from api.engine.dashboard_params import MAX_FILTER_LENGTH, MAX_FILTERS, parse_filters, resolve, view
from api.engine.errors import QueryError

DEMO = DASHBOARDS_DIR / "demo.yml"
SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]
DIMENSIONS = list(get_catalogue().dimensions)


def raw_demo() -> dict[str, Any]:
    return yaml.safe_load(DEMO.read_text())


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def local(t: int, zone: str) -> str:
    return datetime.fromtimestamp(t, ZoneInfo(zone)).isoformat()


# -- definitions ------------------------------------------------------------------------------------


def test_the_demo_dashboard_loads_with_every_tile_kind() -> None:
    board = get_dashboards()["demo"]
    assert board == load_dashboards()["demo"]
    assert (board.id, board.range, board.timezone) == ("demo", "last_7d", "UTC")
    kinds = {t.id: t.kind for t in board.tiles}
    assert kinds == {
        "revenue": "series",
        "active_users": "number",
        "conversion_rate": "number",
        "events_by_country": "breakdown",
        "purchases_by_device": "series",
        "checkout_funnel": "funnel",
        "checkout_button": "experiment",
        "live": "live",
    }
    assert all(1 <= t.width <= 12 for t in board.tiles)
    assert len(board.definition_hash) == 16 and board.definition_hash == load_dashboards()["demo"].definition_hash


def _set(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of raw with the value at a dotted path (list indexes as numbers) set; `...` deletes it."""
    out = copy.deepcopy(raw)
    *parents, last = path.split(".")
    node: Any = out
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    if value is ...:
        del node[key]
    else:
        node[key] = value
    return out


RULES = [
    ("tiles.1.metric", "revenu", "tiles.1.metric: unknown metric 'revenu'; known: events", "catalogue_metric"),
    ("tiles.0.metrics", ["revenue", "revenue"], "tiles.0.metrics: a name is listed twice", "unique"),
    ("tiles.4.stack_by", "colour", "tiles.4.stack_by: unknown dimension 'colour'", "catalogue_dimension"),
    ("tiles.3.dimension", "city", "tiles.3.dimension: unknown dimension 'city'", "catalogue_dimension"),
    ("tiles.3.top", 0, "tiles.3.top: Input should be greater than or equal to 1", "greater_than_equal"),
    ("tiles.0.top", 5, "tiles.0: top: ranks the stacked groups, give stack_by too", "needs_stack_by"),
    ("tiles.5.funnel", "signup", "tiles.5: funnel: no funnel 'signup' is defined; known: checkout", "defined_funnel"),
    (
        "tiles.5.breakdown",
        "page",
        "tiles.5: breakdown: 'page' is not one of the funnel's breakdowns",
        "funnel_breakdown",
    ),
    ("tiles.6.experiment", "nope", "tiles.6: experiment: no experiment 'nope' is defined", "defined_experiment"),
    ("tiles.0.width", 13, "tiles.0.width: Input should be less than or equal to 12", "less_than_equal"),
    ("tiles.7.filters", [], "tiles.7.filters: Extra inputs are not permitted", "extra_forbidden"),
    ("tiles.2.colour", "red", "tiles.2.colour: Extra inputs are not permitted", "extra_forbidden"),
    ("tiles.2.kind", "pie", "tiles.2: Input tag 'pie' found using 'kind' does not match", "union_tag_invalid"),
    ("tiles.2.id", "revenue", "tiles: tile id 'revenue' is used twice", "unique"),
    ("tiles.2.id", "Conversion Rate", "tiles.2.id: String should match pattern", "string_pattern_mismatch"),
    ("range", "last_8d", "range: 'last_8d' is not a relative range; one of last_1h", "relative_range"),
    ("timezone", "Mars/Olympus", "timezone: 'Mars/Olympus' is not an IANA time zone", "iana_zone"),
    ("version", 0, "version: Input should be greater than or equal to 1", "greater_than_equal"),
    ("title", ..., "title: Field required", "missing"),
    ("id", "other", "id: 'other' must be the file's name (demo)", "file_name"),
    (
        "tiles.1.filters",
        [{"dimension": "country", "op": "eq", "values": ["DE", "FR"]}],
        "tiles.1.filters.0: values: op eq takes exactly one value",
        "eq_one_value",
    ),
    (
        "tiles.1.filters",
        [{"dimension": "colour", "values": ["red"]}],
        "tiles.1.filters.0.dimension: unknown dimension 'colour'",
        "catalogue_dimension",
    ),
]


@pytest.mark.parametrize(("path", "value", "message", "rule"), RULES, ids=[f"{r[3]}:{r[0]}" for r in RULES])
def test_each_rule_is_refused_naming_the_file_the_field_and_the_rule(
    path: str, value: Any, message: str, rule: str
) -> None:
    with pytest.raises(DashboardError) as caught:
        parse_dashboard(_set(raw_demo(), path, value), DEMO)
    text = str(caught.value)
    assert text.startswith("dashboards/demo.yml: "), text
    assert message in text, text
    assert f"(rule: {rule})" in text, text


def test_a_dashboard_holds_at_most_max_tiles_and_at_least_one() -> None:
    raw = raw_demo()
    many = [{"id": f"t{i}", "kind": "number", "metric": "events"} for i in range(MAX_TILES + 1)]
    for tiles_, rule in ((many, "too_long"), ([], "too_short")):
        with pytest.raises(DashboardError, match=rf"tiles: .*\(rule: {rule}\)"):
            parse_dashboard({**raw, "tiles": tiles_}, DEMO)


def test_a_folder_reports_every_file_at_fault(tmp_path: Path) -> None:
    (tmp_path / "good.yml").write_text(yaml.safe_dump({**raw_demo(), "id": "good"}))
    (tmp_path / "bad.yml").write_text(yaml.safe_dump({**raw_demo(), "id": "bad", "version": "one"}))
    (tmp_path / "list.yml").write_text("- not a mapping\n")
    with pytest.raises(DashboardError) as caught:
        load_dashboards(tmp_path)
    lines = str(caught.value).splitlines()
    assert any("bad.yml: version: Input should be a valid integer" in line for line in lines), lines
    assert any("list.yml: a dashboard is a mapping" in line and "(rule: mapping)" in line for line in lines), lines
    assert not any("good.yml" in line for line in lines)


def test_every_file_in_the_folder_loads() -> None:
    boards = load_dashboards()
    assert set(boards) == {p.stem for p in DASHBOARDS_DIR.glob("*.yml")}


# -- ranges ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "zone", "now", "start", "end"),
    [
        ("last_7d", "UTC", "2026-12-06T11:40:30+00:00", "2026-11-30T00:00:00+00:00", "2026-12-07T00:00:00+00:00"),
        (
            "today",
            "Europe/Berlin",
            "2026-12-06T23:30:00+00:00",
            "2026-12-07T00:00:00+01:00",
            "2026-12-08T00:00:00+01:00",
        ),
        # A 23-hour day (Berlin springs forward) and a 25-hour one (New York falls back).
        (
            "today",
            "Europe/Berlin",
            "2026-03-29T12:00:00+02:00",
            "2026-03-29T00:00:00+01:00",
            "2026-03-30T00:00:00+02:00",
        ),
        (
            "today",
            "America/New_York",
            "2026-11-01T12:00:00-05:00",
            "2026-11-01T00:00:00-04:00",
            "2026-11-02T00:00:00-05:00",
        ),
        # Seven local days across the change: 167 hours.
        (
            "last_7d",
            "Europe/Berlin",
            "2026-03-31T10:00:00+02:00",
            "2026-03-25T00:00:00+01:00",
            "2026-04-01T00:00:00+02:00",
        ),
        # Hours of a :30 zone start at :30 UTC.
        (
            "last_24h",
            "Asia/Kolkata",
            "2026-12-06T11:40:00+00:00",
            "2026-12-05T18:00:00+05:30",
            "2026-12-06T18:00:00+05:30",
        ),
        # The repeated hour of a fall-back day is one hour bucket of its own.
        (
            "last_24h",
            "America/New_York",
            "2026-11-01T12:10:00-05:00",
            "2026-10-31T14:00:00-04:00",
            "2026-11-01T13:00:00-05:00",
        ),
        (
            "last_1h",
            "Asia/Kathmandu",
            "2026-12-06T11:40:30+00:00",
            "2026-12-06T16:26:00+05:45",
            "2026-12-06T17:26:00+05:45",
        ),
        (
            "this_month",
            "America/Sao_Paulo",
            "2026-12-06T11:40:00+00:00",
            "2026-12-01T00:00:00-03:00",
            "2027-01-01T00:00:00-03:00",
        ),
        (
            "last_12m",
            "Pacific/Auckland",
            "2026-12-06T11:40:00+00:00",
            "2026-01-01T00:00:00+13:00",
            "2027-01-01T00:00:00+13:00",
        ),
        (
            "last_30d",
            "Australia/Lord_Howe",
            "2026-04-10T00:00:00+00:00",
            "2026-03-12T00:00:00+11:00",
            "2026-04-11T00:00:00+10:30",
        ),
    ],
)
def test_relative_ranges_are_whole_units_in_the_zone_the_current_one_last(
    expression: str, zone: str, now: str, start: str, end: str
) -> None:
    period = resolve(expression, ZoneInfo(zone), at(now), SETTINGS)
    assert (local(period.start, zone), local(period.end, zone)) == (start, end)
    assert period.open and period.start < period.cut <= period.end
    assert period.cut == min(period.end, int(at(now)) // 60 * 60 + 60)  # counted up to the end of now's minute


def test_day_ranges_span_the_local_hours_of_their_days() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    spring = resolve("today", berlin, at("2026-03-29T12:00:00+02:00"), SETTINGS)
    autumn = resolve("today", ZoneInfo("America/New_York"), at("2026-11-01T12:00:00-05:00"), SETTINGS)
    week = resolve("last_7d", berlin, at("2026-03-31T10:00:00+02:00"), SETTINGS)
    assert (spring.end - spring.start, autumn.end - autumn.start, week.end - week.start) == (
        23 * 3600,
        25 * 3600,
        167 * 3600,
    )


def test_loads_within_a_minute_resolve_alike_and_the_range_holds_all_day() -> None:
    zone = ZoneInfo("Europe/Berlin")
    first = resolve("last_7d", zone, at("2026-12-06T11:40:01+00:00"), SETTINGS)
    same_minute = resolve("last_7d", zone, at("2026-12-06T11:40:59.9+00:00"), SETTINGS)
    later = resolve("last_7d", zone, at("2026-12-06T18:05:00+00:00"), SETTINGS)
    assert first == same_minute
    assert (later.start, later.end) == (first.start, first.end) and later.cut > first.cut


def test_the_previous_period_is_one_period_back_counted_as_far_into_it() -> None:
    zone = ZoneInfo("UTC")
    week = resolve("last_7d", zone, at("2026-12-06T11:40:00+00:00"), SETTINGS)
    assert [local(t, "UTC") for t in week.previous(zone)] == ["2026-11-23T00:00:00+00:00", "2026-11-29T11:41:00+00:00"]
    month = resolve("this_month", zone, at("2026-12-06T11:40:00+00:00"), SETTINGS)
    assert [local(t, "UTC") for t in month.previous(zone)] == ["2026-11-01T00:00:00+00:00", "2026-11-06T11:41:00+00:00"]
    closed = resolve("2026-11-01/2026-11-08", zone, at("2026-12-06T11:40:00+00:00"), SETTINGS)
    assert not closed.open and closed.cut == closed.end
    assert [local(t, "UTC") for t in closed.previous(zone)] == [
        "2026-10-25T00:00:00+00:00",
        "2026-11-01T00:00:00+00:00",
    ]


def test_absolute_ranges_are_taken_as_asked_to_the_second() -> None:
    now = at("2026-12-06T11:40:00+00:00")
    berlin = ZoneInfo("Europe/Berlin")
    period = resolve("2026-11-01T09:30:00.75/2026-11-02T00:00:00+00:00", berlin, now, SETTINGS)
    assert (local(period.start, "UTC"), local(period.end, "UTC")) == (
        "2026-11-01T08:30:00+00:00",
        "2026-11-02T00:00:00+00:00",
    )
    reaching = resolve("2026-12-01/2026-12-10", berlin, now, SETTINGS)
    assert reaching.open and local(reaching.cut, "UTC") == "2026-12-06T11:41:00+00:00"


@pytest.mark.parametrize(
    ("expression", "rule"),
    [
        ("last_8d", "range_syntax"),
        ("2026-11-01", "range_syntax"),
        ("2026-13-01/2026-12-01", "iso_8601"),
        ("2026-12-01/2026-11-01", "after_start"),
        ("2026-12-01/2026-12-01", "after_start"),
        ("2020-01-01/2026-01-01", "max_range_days"),
        ("1800-01-01/1800-02-01", "supported_range"),
    ],
)
def test_a_bad_range_is_refused_naming_the_parameter_and_the_rule(expression: str, rule: str) -> None:
    with pytest.raises(QueryError) as caught:
        resolve(expression, ZoneInfo("UTC"), at("2026-12-06T11:40:00+00:00"), SETTINGS)
    assert (caught.value.field, caught.value.rule) == ("range", rule)


# -- filters and the hash ---------------------------------------------------------------------------------


def test_filters_parse_eq_whole_and_in_values_sorted_once() -> None:
    found = parse_filters(["country:eq:DE,AT", "device:in:tablet,mobile,tablet", "page:not_in:"], DIMENSIONS, SETTINGS)
    assert [(c.dimension, c.op, c.values) for c in found] == [
        ("country", "eq", ("DE,AT",)),
        ("device", "in", ("mobile", "tablet")),
        ("page", "not_in", ("",)),
    ]


@pytest.mark.parametrize(
    ("texts", "field", "rule"),
    [
        (["country=DE"], "filter[0]", "filter_syntax"),
        (["device:in:mobile", "country:like:DE"], "filter[1]", "filter_syntax"),
        (["city:eq:Berlin"], "filter[0]", "catalogue_dimension"),
        (["country:eq:" + "x" * MAX_FILTER_LENGTH], "filter[0]", "max_length"),
        (["country:eq:DE"] * (MAX_FILTERS + 1), "filter", "max_filters"),
        (["country:eq:\ud800"], "filter[0]", "utf8"),
    ],
)
def test_a_bad_filter_is_refused_naming_it(texts: list[str], field: str, rule: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_filters(texts, DIMENSIONS, SETTINGS)
    assert (caught.value.field, caught.value.rule) == (field, rule)


def test_filter_values_in_all_are_capped_by_the_setting() -> None:
    few = Settings(_env_file=None, api_max_filter_values=3)  # type: ignore[call-arg]
    with pytest.raises(QueryError) as caught:
        parse_filters(["device:in:a,b", "country:in:c,d"], DIMENSIONS, few)
    assert (caught.value.field, caught.value.rule) == ("filter", "max_filter_values")


def test_what_a_load_hashes_to_is_stable() -> None:
    now = at("2026-12-06T11:40:10+00:00")
    one = view("last_7d", "Europe/Berlin", ["device:in:tablet,mobile"], DIMENSIONS, now, SETTINGS)
    same = view("last_7d", "Europe/Berlin", ["device:in:mobile,tablet,mobile"], DIMENSIONS, now + 45, SETTINGS)
    assert query_hash(one.question()) == query_hash(same.question())
    # Pinned: the hash is of canonical JSON (sorted keys, no set or dict order, no process state), so every worker
    # and every restart computes the same key. A change of this value is a change of the cache key format.
    assert query_hash(one.question()) == "b4a09b2ffb8f2c040d97a7a98be40a06"
    others = [
        view("last_7d", "Europe/Berlin", ["device:in:tablet,mobile"], DIMENSIONS, now + 60, SETTINGS),  # next minute
        view("last_7d", "Europe/Paris", ["device:in:tablet,mobile"], DIMENSIONS, now, SETTINGS),
        view("last_7d", "Europe/Berlin", ["device:in:tablet"], DIMENSIONS, now, SETTINGS),
        view("last_30d", "Europe/Berlin", ["device:in:tablet,mobile"], DIMENSIONS, now, SETTINGS),
    ]
    assert len({query_hash(v.question()) for v in [one, *others]}) == 5


# -- tiles planned from the parameters alone ----------------------------------------------------------------


def test_every_tile_is_planned_as_its_endpoints_request_before_anything_is_read() -> None:
    board = get_dashboards()["demo"]
    now = datetime(2026, 12, 6, 11, 40, tzinfo=UTC).timestamp()
    seen = view("last_7d", "Europe/Berlin", ["country:eq:DE"], DIMENSIONS, now, SETTINGS)
    plans = {board.tiles[p.index].id: p for p in tiles.plan(board, seen, "t1", get_catalogue(), SETTINGS)}
    revenue = plans["revenue"].asked[0]
    assert revenue["granularity"] == "hour" and revenue["timezone"] == "Europe/Berlin"  # auto over the whole week
    assert (revenue["start"], revenue["end"]) == ("2026-11-30T00:00:00+01:00", "2026-12-06T12:41:00+01:00")
    assert revenue["filters"] == [{"dimension": "country", "op": "eq", "values": ["DE"]}]
    number = plans["active_users"]
    assert isinstance(board.tiles[number.index], NumberTile) and len(number.asked) == 2
    assert (number.asked[1]["start"], number.asked[1]["end"]) == (
        "2026-11-23T00:00:00+01:00",
        "2026-11-29T12:41:00+01:00",
    )
    funnel = plans["checkout_funnel"]
    assert funnel.asked == [
        {"funnel": "checkout", "start": "2026-11-29T00:00:00+00:00", "end": "2026-12-07T00:00:00+00:00",
         "granularity": "day", "breakdown": None}
    ]  # fmt: skip
    assert any("widened" in note for note in funnel.notes) and any("filters" in note for note in funnel.notes)
    assert all(p.error is None for p in plans.values())


def test_a_tile_the_parameters_cannot_answer_is_refused_alone_naming_the_parameter() -> None:
    board = get_dashboards()["demo"]
    now = datetime(2026, 12, 6, 11, 40, tzinfo=UTC).timestamp()
    seen = view("last_12m", "UTC", ["country:eq:DE", "device:eq:mobile"], DIMENSIONS, now, SETTINGS)
    plans = {board.tiles[p.index].id: p for p in tiles.plan(board, seen, "t1", get_catalogue(), SETTINGS)}
    # Unique users by two dimensions are raw events only, for at most 93 days: those tiles alone are refused.
    assert plans["active_users"].error is not None
    assert (plans["active_users"].error["field"], plans["active_users"].error["rule"]) == (
        "range",
        "max_raw_range_days",
    )
    assert plans["revenue"].error is None and plans["events_by_country"].error is None

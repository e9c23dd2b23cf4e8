"""Schemathesis against the real query API: its own OpenAPI document, every check, bounded and deterministic.

The API is served as `analytics api` serves it (api.main.served_app, under uvicorn with the CLI's server options:
tests/integration/hardening.py) on a loopback port with its real lifespan, over a small real warehouse (one
tenant's generated events loaded into DuckLake and rolled up by dbt, as tests/integration/query_lake.py does for
the engine tests), the session's Redis (keys under a prefix of this module) and a tenants database of its own.
Requests go over real HTTP, not through an ASGI test client: the body limit, the 400/401/413 answers and the SSE
stream are what a dashboard meets, and the lifespan (warehouse, replica, Redis clients) runs once instead of
around each call. Generated requests carry the tenant's read key as `Authorization: Bearer`; negative cases and
the `ignored_auth` probes go without it or with a wrong one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import httpx
import pytest
import schemathesis

from analytics_core import warehouse
from analytics_core.settings import Settings, get_settings
from api.main import served_app
from tenants import TenantStore, create_tenant_with_keys
from tests.fuzz_helpers import Outcomes, Target, delete_redis_keys, fuzz_schema, serving_the_fuzzed_document
from tests.integration.dbt_runs import run_dbt
from tests.integration.query_lake import insert_block

pytestmark = pytest.mark.integration

TAG = uuid.uuid4().hex[:8]
TENANT, READ_KEY = f"fuzz_{TAG}", f"rk_fuzz_{TAG}"
DOCUMENT = served_app(get_settings()).openapi()  # builds no client: those are made by the lifespan
OUTCOMES = Outcomes()
LIVE = "/api/v1/live"
DASHBOARD = "GET /api/v1/dashboards/{id}"
SECURED = ("GET /api/v1/metrics", "POST /api/v1/query", f"GET {LIVE}", "GET /api/v1/dashboards", DASHBOARD)
schema = fuzz_schema(
    DOCUMENT,
    f"Bearer {READ_KEY}",
    OUTCOMES,
    operations=[
        # The SSE stream never ends by itself: read one event (`counters` is sent at once) and stop, and never wait
        # more than 5 s for it. A stream that sends nothing within that time fails the case (a timeout).
        {"include-path": LIVE, "max-stream-events": 1, "request-timeout": 5},
    ],
)
QUERY = "POST /api/v1/query"
FUNNEL_QUERY = "POST /api/v1/funnels/query"
LIMITS = get_settings()  # the fixture's settings differ in paths and prefixes only, not in limits
BODY_LIMIT = 64 * 1024  # api.app.MAX_QUERY_BODY_BYTES
FIRST_YEAR, LAST_YEAR = 1901, 9997  # the supported instants are [1900-01-01, 9999-01-01) UTC; a day of margin


@schema.hook("map_case")  # applied to the cases of every phase (examples, coverage, fuzzing) as they are made
def keep_rules_between_fields(context: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    """Make a positive query body keep the rules JSON Schema cannot state, so `positive_data_acceptance` judges
    the API and not the generator: the rules that relate one field to another, and the two that bound a whole
    value (docs/API.md, "A query"). Each field on its own is still as generated and must be documented exactly
    (catalogue names, limits, time zones); negative cases are left alone. The case is re-validated by
    schemathesis before it is sent: had it stopped matching the document, it would be judged as negative data.

    - `end` is after `start`, and the range is at most `api_max_raw_range_days` (93) long, the shortest cap of
      all (`api_max_range_days` for rollup answers, raw answers' own): `end` is moved to `start` plus the
      generated span, clamped; a granularity is kept unless its buckets would exceed `api_max_buckets`;
    - the times lie between 1900 and 9999 (a bound on a date-time string JSON Schema cannot express): the year
      of `start` is moved into that window;
    - `eq` takes exactly one value; all filters hold at most `api_max_filter_values` values; `top_n` needs
      `group_by`; the body is at most 64 KB.
    """
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return case
    if case.operation.label == FUNNEL_QUERY and isinstance(case.body, dict):
        keep_funnel_rules(case.body)
        return case
    if case.operation.label == DASHBOARD and isinstance(case.query, dict):
        keep_dashboard_rules(case.query)
        return case
    if case.operation.label != QUERY:
        return case
    if (
        isinstance(case.body, dict)
        and isinstance(case.body.get("start"), str)
        and isinstance(case.body.get("end"), str)
    ):
        keep_rules(case.body)
    return case


def keep_rules(body: dict[str, Any]) -> None:
    keep_range(body)
    budget = LIMITS.api_max_filter_values
    for item in body.get("filters") or []:
        values = item["values"][:1] if item.get("op", "eq") == "eq" else item["values"]
        item["values"] = values[: max(1, budget)]
        budget -= len(item["values"])
    if body.get("top_n") is not None and not body.get("group_by"):
        body["top_n"] = None
    while len(json.dumps(body).encode()) > BODY_LIMIT - 1024 and any(len(f["values"]) > 1 for f in body["filters"]):
        longest = max(body["filters"], key=lambda f: len(json.dumps(f["values"])))
        longest["values"] = longest["values"][: len(longest["values"]) // 2 or 1]


def keep_funnel_rules(body: dict[str, Any]) -> None:
    """A positive funnel question keeps the rules between fields (docs/FUNNELS.md): exactly one of `funnel` and
    `definition`; in a definition, exclusions between two of its steps (i < j), different event types in an
    `any`-order funnel; the range as keep_range makes it; the body well under 64 KB. An undefined `funnel` key
    stays: its 404 is documented."""
    if isinstance(body.get("start"), str) and isinstance(body.get("end"), str):
        keep_range(body)
    definition = body.get("definition")
    if body.get("funnel") is not None and definition is not None:
        body["funnel"] = None
    if body.get("funnel") is None and definition is None:
        body["funnel"] = "checkout"
    if not isinstance(definition, dict):
        return
    steps = definition.get("steps") or []
    for exclusion in definition.get("exclusions") or []:
        if exclusion.get("between") is not None:
            exclusion["between"] = [1, len(steps)]
    if definition.get("order") == "any":
        for i, step in enumerate(steps):
            step["event_type"] = f"{step['event_type'][:190]}{i}"
    while len(json.dumps(body).encode()) > BODY_LIMIT - 1024:
        step = max(steps, key=lambda s: len(json.dumps(s.get("where") or {})))
        if not step.get("where"):
            break
        step["where"] = dict(list(step["where"].items())[: len(step["where"]) // 2])


def keep_dashboard_rules(query: dict[str, Any]) -> None:
    """A positive dashboard load's `range` <start>/<end> (docs/DASHBOARDS.md) keeps the rules its pattern cannot
    state: real dates, the end after the start, the range caps, both within the window (keep_range); a pair the
    server could not read as dates is replaced by one it can. The relative ranges are taken as generated."""
    first, slash, last = str(query.get("range", "")).partition("/")
    if not slash:
        return
    pair = {"start": first, "end": last}
    try:
        _parse(first), _parse(last)
    except ValueError:
        pair = {"start": "2026-11-01", "end": "2026-11-08"}
    keep_range(pair)
    query["range"] = f"{pair['start']}/{pair['end']}"


def keep_range(body: dict[str, Any]) -> None:
    """`end` after `start` by the generated span, within the range and bucket caps; both within the window."""
    try:
        start = _parse(body["start"])
        end = _parse(body["end"])
    except ValueError:
        return  # a document-valid time the server must read as well; its answer is checked as generated
    span = min(max(abs(_naive(end) - _naive(start)), timedelta(minutes=1)), RANGE_CAP)
    if start.year < FIRST_YEAR or start.year > LAST_YEAR:
        start = _with_year(start, FIRST_YEAR + start.year % (LAST_YEAR - FIRST_YEAR))
    grain = body.get("granularity", "auto")
    if grain in GRAIN:  # the range widened to whole buckets, plus a 25-hour day or two, stays within the cap
        span = min(span, GRAIN[grain] * (LIMITS.api_max_buckets - 4))
    if isinstance(start, datetime):
        body["start"], body["end"] = start.isoformat(), (start + span).isoformat()
    else:  # a date: the range is whole days
        body["start"], body["end"] = start.isoformat(), (start + timedelta(days=max(1, span.days))).isoformat()


GRAIN = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}
RANGE_CAP = timedelta(days=min(LIMITS.api_max_range_days, LIMITS.api_max_raw_range_days))


def _parse(value: str) -> datetime | date:
    """A document `date-time` (RFC 3339, with an offset) or `date`, as the API reads them."""
    if len(value) == 10:
        return date.fromisoformat(value)
    return datetime.fromisoformat(value.replace("z", "Z"))


def _naive(value: datetime | date) -> datetime:
    return value.replace(tzinfo=None) if isinstance(value, datetime) else datetime.combine(value, time())


def _with_year(value: datetime | date, year: int) -> Any:
    try:
        return value.replace(year=year)
    except ValueError:  # 29 February
        return value.replace(year=year, day=28)


@pytest.fixture(scope="module")
def fuzzed_api(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """The API over a warehouse of two days of one tenant's events up to 30 minutes ago, rolled up by dbt."""
    base = tmp_path_factory.mktemp("fuzz_api")
    settings = stack_settings.model_copy(
        update={
            "warehouse_path": base / "warehouse",
            "tenants_db": base / "tenants.sqlite",
            "redis_key_prefix": f"test:fuzz{TAG}:",
        }
    )
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    con = warehouse.connect(settings)
    try:
        insert_block(
            con, "lake.main.raw_events", TENANT, now - timedelta(days=2), now - timedelta(minutes=30), 4_000, "f"
        )
    finally:
        con.close()
    run_dbt(settings, "build", "--exclude-resource-type", "unit_test")
    create_tenant_with_keys(TenantStore(settings.tenants_db), TENANT, f"wk_fuzz_{TAG}", READ_KEY)
    try:
        with serving_the_fuzzed_document(served_app(settings), settings, DOCUMENT, "API") as target:
            yield target
    finally:
        delete_redis_keys(settings, f"{settings.redis_key_prefix}*")  # cached answers under this module's prefix


@schema.parametrize()
def test_api_conforms_to_its_openapi_document(case: schemathesis.Case, fuzzed_api: Target) -> None:
    case.call_and_validate(base_url=fuzzed_api.url)


def test_the_document_declares_the_read_key(fuzzed_api: Target) -> None:
    """The API answers 401 without a read key; unless the document says so (a Bearer security scheme), the fuzzer
    cannot send requests without one on purpose and `ignored_auth` has nothing to probe."""
    document = httpx.get(f"{fuzzed_api.url}/openapi.json", timeout=10).json()
    schemes = document.get("components", {}).get("securitySchemes", {})
    bearer = {name for name, s in schemes.items() if (s.get("type"), s.get("scheme", "").lower()) == ("http", "bearer")}
    problems = []
    for label in SECURED:
        method, path = label.split(" ")
        operation = document["paths"].get(path, {}).get(method.lower())
        if operation is None:
            problems.append(f"{label}: not in the document")
            continue
        security = operation.get("security", document.get("security", []))
        if not any(bearer & set(requirement) for requirement in security):
            problems.append(f"{label}: no HTTP Bearer security requirement (schemes: {sorted(schemes)})")
        if "401" not in operation.get("responses", {}):
            problems.append(f"{label}: 401 not documented")
    assert not problems, "\n".join(problems)


def test_the_fuzzer_reached_the_handlers() -> None:
    """Valid generated requests got answers, not only refusals: the catalogue, queries and the live stream."""
    if not OUTCOMES.seen:
        pytest.skip("runs after test_api_conforms_to_its_openapi_document, in the same session")
    not_reached = [label for label in SECURED if OUTCOMES.statuses(label)[200] == 0]
    assert not not_reached, f"no generated request was answered 200 by {not_reached}:\n{OUTCOMES.summary()}"

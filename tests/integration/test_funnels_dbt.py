"""fct_funnel_daily on DuckDB against the two other computations of the same funnel.

Sessions walking the project's `checkout` funnel (page_view → add_to_cart → checkout → purchase,
window 1 day, broken down by country and device) over three days, with bots, repeated first steps,
steps past the window and users still in their window, are written into a fresh lake and built
with dbt. The table must equal (a) the funnel SQL as the query API renders it
(analytics_core/funnel_sql.py) over the same staged events, and (b) tests/funnel_reference.py, the
plain-Python engine, over the events themselves.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from analytics_core import warehouse
from analytics_core.funnel_sql import render
from analytics_core.funnels import Funnel, get_definitions, table_hashes
from analytics_core.settings import Settings
from api.app import create_app
from api.routes import experiments as experiments_route
from tenants import TenantStore, create_tenant_with_keys
from tests import funnel_reference
from tests.integration.dbt_runs import lake_query, run_dbt
from tests.integration.lake_events import lake_settings, write_raw

pytestmark = pytest.mark.integration

FUNNEL = get_definitions().funnels["checkout"]
STEPS = [s.event_type for s in FUNNEL.steps]
DAY0 = datetime(2026, 11, 2, tzinfo=UTC)
MAX_STEPS = 10
BATCH_EVENTS = 400  # funnel_build_batch_events for the module's first build


def generated(seed: int = 3) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for tenant in ("t1", "t2"):
        for u in range(120):
            user, country, device = f"{tenant}-u{u}", rng.choice(["US", "DE", "IN"]), rng.choice(["mobile", "desktop"])
            for _ in range(rng.randrange(1, 4)):
                at = DAY0 + timedelta(seconds=rng.randrange(0, 3 * 86_400))
                depth = rng.choice([1, 1, 2, 2, 3, 4, 4])
                for step in STEPS[:depth]:
                    out.append(
                        {"tenant_id": tenant, "user_id": user, "event_type": step, "timestamp": at, "is_bot": False,
                         "country": country, "device": device}
                    )  # fmt: skip
                    at += timedelta(seconds=rng.choice([5, 60, 600, 3600, 30 * 3600]))  # 30 h: past the window
                    if rng.random() < 0.1:  # some later steps come from another device
                        device = rng.choice(["mobile", "desktop"])
        out.append({"tenant_id": tenant, "user_id": f"{tenant}-bot", "event_type": "page_view", "timestamp": DAY0,
                    "is_bot": True, "country": "US", "device": "bot"})  # fmt: skip
    return out


@pytest.fixture(scope="module")
def built(
    stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, list[dict[str, Any]]]]:
    folder: Path = tmp_path_factory.mktemp("funnels")
    settings = lake_settings(stack_settings, folder, "funnels")
    events = generated()
    write_raw(settings, events)
    # The first build runs in batches of users (as a whole build over more than 10M events does), so
    # every comparison below covers the batched build; the incremental test covers the unbatched one.
    done = run_dbt(
        settings,
        "build",
        "--select",
        "stg_tracking__events",
        "fct_funnel_entries",
        "fct_funnel_daily",
        "--indirect-selection",
        "cautious",
        "--exclude-resource-type",
        "unit_test",
        "--vars",
        json.dumps({"funnel_build_batch_events": BATCH_EVENTS}),
    )
    relevant = sum(1 for e in events if not e["is_bot"] and e["event_type"] in STEPS)
    batches = -(-relevant // BATCH_EVENTS)
    assert batches >= 3
    for i in range(1, batches + 1):
        assert f"funnel checkout built whole in {batches} batches of users, batch {i} of {batches} done" in done.stdout
    yield settings, events


def table_rows(
    settings: Settings, breakdown: str, key: str = "checkout"
) -> tuple[dict[tuple[Any, ...], dict[str, Any]], datetime]:
    con = warehouse.connect(settings, read_only=True)
    try:
        cursor = con.execute(
            f"SELECT * FROM {settings.warehouse_alias}.main.fct_funnel_daily WHERE funnel_key = ? AND breakdown = ?",
            [key, breakdown],
        )
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    finally:
        con.close()
    built_at = max(r["_built_at"] for r in rows)  # the latest build (older days may keep an earlier one)
    return {(r["tenant_id"], r["cohort_day"], r["breakdown_value"]): r for r in rows}, built_at


def api_rows(
    settings: Settings, breakdown: str, as_of: datetime, funnel: Funnel = FUNNEL
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The same funnel through analytics_core/funnel_sql.py (the query API's path) over the staged events."""
    group = [breakdown] if breakdown else []
    sql, params = render(
        funnel,
        f"{settings.warehouse_alias}.main.stg_tracking__events",
        datetime(1900, 1, 1, tzinfo=UTC),
        datetime(9999, 1, 1, tzinfo=UTC),
        as_of,
        group_by=group,
    )
    con = warehouse.connect(settings, read_only=True)
    try:
        cursor = con.execute(sql, params)
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    finally:
        con.close()
    return {(r["tenant_id"], r["cohort_day"], r[breakdown] if breakdown else None): r for r in rows}


def _staged(e: dict[str, Any], i: int) -> dict[str, Any]:
    """A generated event as tests/funnel_reference.py takes it (the staged columns, time in epoch µs)."""
    return {
        "tenant_id": e["tenant_id"], "event_id": f"e{i}", "event_type": e["event_type"], "user_key": e["user_id"],
        "page": None, "country": e["country"], "device": e["device"], "library": "test", "currency": None,
        "experiment_variant": None, "properties": "{}", "is_bot": e["is_bot"],
        "ts": int(e["timestamp"].timestamp() * 1_000_000),
    }  # fmt: skip


def _us(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000 + t.microsecond


def reference_rows(
    events: list[dict[str, Any]], breakdown: str, as_of: datetime, funnel: Funnel = FUNNEL
) -> dict[tuple[Any, ...], dict[str, Any]]:
    staged = [_staged(e, i) for i, e in enumerate(events)]
    group = [breakdown] if breakdown else []
    start, end = datetime(1900, 1, 1, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC)
    entries = funnel_reference.entries(staged, funnel, _us(start), _us(end), _us(as_of), group)
    rows = funnel_reference.summary(entries, funnel, group)
    epoch = date(1970, 1, 1)  # the reference numbers days from it
    return {
        (r["tenant_id"], epoch + timedelta(days=r["cohort_day"]), r[breakdown] if breakdown else None): r for r in rows
    }


def same(table: dict[str, Any], other: dict[str, Any], where: Any) -> None:
    n = table["steps"]
    for column in ("entered", "pending", "excluded", *(f"reached_{k}" for k in range(1, n + 1))):
        assert table[column] == other[column], (where, column)
    for k in range(1, n):
        assert table[f"pending_at_{k}"] == other[f"pending_at_{k}"], (where, k)
    for k in range(2, n + 1):
        for name in ("median_s", "p90_s"):
            want = other[f"{name}_{k}"]
            assert (table[f"{name}_{k}"] is None) == (want is None), (where, name, k)
            if want is not None:
                assert table[f"{name}_{k}"] == pytest.approx(want, rel=1e-12), (where, name, k)
    for k in range(n + 1, MAX_STEPS + 1):  # no steps past the funnel's last
        assert table[f"reached_{k}"] is None and table[f"median_s_{k}"] is None


@pytest.mark.parametrize("breakdown", ["", "country", "device"])
def test_the_daily_table_equals_the_api_path_and_the_reference(
    built: tuple[Settings, list[dict[str, Any]]], breakdown: str
) -> None:
    settings, events = built
    table, built_at = table_rows(settings, breakdown)
    api = api_rows(settings, breakdown, built_at)
    reference = reference_rows(events, breakdown, built_at)
    assert table.keys() == api.keys() == reference.keys()
    assert len({day for _, day, _ in table}) >= 3
    for key, row in table.items():
        assert row["steps"] == len(STEPS)
        same(row, api[key], key)
        same(row, reference[key], key)
    # The first step's device counts, not a later one's; the bot never enters.
    assert sum(r["entered"] for r in table.values()) == sum(r["entered"] for r in reference.values()) > 0


def api_answer_rows(answer: dict[str, Any]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The API's rows in the shape of the summary columns, keyed by (day, breakdown value)."""
    out = {}
    for row in answer["rows"]:
        flat = {"entered": row["entered"], "pending": row["pending"], "excluded": row["excluded"]}
        for k, value in enumerate(row["reached"], 1):
            flat[f"reached_{k}"] = value
        for k, value in enumerate(row["pending_at"], 1):
            flat[f"pending_at_{k}"] = value
        for k, (median, p90) in enumerate(zip(row["median_s"], row["p90_s"], strict=True), 2):
            flat[f"median_s_{k}"], flat[f"p90_s_{k}"] = median, p90
        day = date.fromisoformat(row["cohort_day"]) if row["cohort_day"] else None
        out[(day, row["breakdown_value"])] = flat
    return out


def test_the_api_answers_defined_and_ad_hoc_funnels_with_the_same_numbers(
    built: tuple[Settings, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, events = built
    create_tenant_with_keys(TenantStore(settings.tenants_db), "t1", "wk_funnels_t1", "rk_funnels_t1")
    start, end = DAY0.isoformat(), (DAY0 + timedelta(days=4)).isoformat()
    adhoc = {"steps": [{"event_type": t} for t in STEPS], "window": "1d", "breakdowns": ["country", "device"]}
    with TestClient(create_app(settings)) as client:
        auth = {"Authorization": "Bearer rk_funnels_t1"}

        def ask(**body: Any) -> dict[str, Any]:
            answer = client.post("/api/v1/funnels/query", headers=auth, json={"start": start, "end": end, **body})
            assert answer.status_code == 200, answer.text
            return answer.json()

        table, _ = table_rows(settings, "country")
        wanted = {(day, value): row for (tenant, day, value), row in table.items() if tenant == "t1"}
        defined = ask(funnel="checkout", breakdown="country")
        assert defined["source"] == "fct_funnel_daily" and [s["event_type"] for s in defined["steps"]] == STEPS
        got = api_answer_rows(defined)
        assert got.keys() == wanted.keys()
        for key, row in got.items():
            for column, value in row.items():
                assert value == pytest.approx(wanted[key][column], rel=1e-12), (key, column)

        # The same definition given ad hoc is counted over the staged events: the same numbers, except
        # pending users, judged at the time asked rather than when the table was built.
        raw = ask(definition=adhoc, breakdown="country")
        assert raw["source"] == "raw_events"
        for key, row in api_answer_rows(raw).items():
            for column in ("entered", "reached_2", "reached_4", "median_s_2", "p90_s_4"):
                assert row[column] == pytest.approx(got[key][column], rel=1e-12), (key, column)

        # total: one row for the range, each user once a day; the reference over the events agrees.
        total = ask(funnel="checkout", granularity="total")
        assert total["source"] == "raw_events" and len(total["rows"]) == 1
        as_of = datetime.fromisoformat(total["as_of"])
        staged_total = reference_total(events, as_of)
        for column, value in api_answer_rows(total)[(None, None)].items():
            assert value == pytest.approx(staged_total[column], rel=1e-12), column

        # Another tenant's events never count; refusals name the field.
        assert sum(r["entered"] for r in defined["rows"]) == sum(
            r["entered"] for (t, *_), r in table.items() if t == "t1"
        )
        both = client.post(
            "/api/v1/funnels/query",
            headers=auth,
            json={"start": start, "end": end, "funnel": "checkout", "definition": adhoc},
        )
        assert both.status_code == 400 and both.json()["field"] == "funnel"
        assert (
            client.post(
                "/api/v1/funnels/query", headers=auth, json={"start": start, "end": end, "funnel": "nope"}
            ).status_code
            == 404
        )
        long = client.post(
            "/api/v1/funnels/query",
            headers=auth,
            json={"start": "2020-01-01", "end": "2026-01-01", "definition": adhoc},
        )
        assert long.status_code == 400 and long.json()["rule"] == "max_raw_range_days"
        bad = client.post(
            "/api/v1/funnels/query",
            headers=auth,
            json={"start": start, "end": end, "definition": {**adhoc, "order": "x"}},
        )
        assert bad.status_code == 400, bad.text

        # Rows built by another definition than the YAML's now are not served: the staged events answer, saying so.
        assert table_hashes()["checkout"] == defined_hash(settings)
        monkeypatch.setattr(experiments_route, "get_table_hashes", lambda: {"checkout": "0" * 32})
        stale = ask(funnel="checkout", breakdown="country")
        assert stale["source"] == "raw_events" and "another definition" in stale["note"]
        assert api_answer_rows(stale).keys() == got.keys()
        year = client.post(
            "/api/v1/funnels/query",
            headers=auth,
            json={"start": "2026-01-01", "end": "2026-12-01", "funnel": "checkout"},
        )
        assert year.status_code == 503 and "only up to 93 days" in year.json()["error"]


def defined_hash(settings: Settings) -> str:
    con = warehouse.connect(settings, read_only=True)
    try:
        found = con.execute(
            f"SELECT DISTINCT definition_hash FROM {settings.warehouse_alias}.main.fct_funnel_daily"
            " WHERE funnel_key = 'checkout'"
        ).fetchall()
    finally:
        con.close()
    assert len(found) == 1
    return str(found[0][0])


def reference_total(events: list[dict[str, Any]], as_of: datetime) -> dict[str, Any]:
    """tenant t1's whole-range summary of the four days by the reference."""
    staged = [_staged(e, i) for i, e in enumerate(events) if e["tenant_id"] == "t1"]
    entries = funnel_reference.entries(staged, FUNNEL, _us(DAY0), _us(DAY0 + timedelta(days=4)), _us(as_of), [])
    return funnel_reference.summary(entries, FUNNEL, [], by_day=False)[0]


def test_late_events_restate_their_days_incrementally_and_leave_older_days_alone(
    built: tuple[Settings, list[dict[str, Any]]],
) -> None:
    """Runs last (it adds events): late steps on the third day and first steps on a new day, then the
    hourly build again. Days from a window before the earliest new event are rebuilt (they equal the
    reference over all events again); the first day, older, keeps its rows from the first build."""
    settings, events = built
    before, first_built = table_rows(settings, "")
    late_day = DAY0 + timedelta(days=2)
    more: list[dict[str, Any]] = []
    for u in range(40):  # users of the third day complete their funnel late; new users start on a new day
        user = f"t1-late{u}"
        for i, step in enumerate(STEPS):
            at = late_day + timedelta(hours=12, minutes=u, seconds=30 * i)
            more.append({"tenant_id": "t1", "user_id": user, "event_type": step, "timestamp": at, "is_bot": False,
                         "country": "US", "device": "mobile"})  # fmt: skip
            more.append({**more[-1], "user_id": f"t1-new{u}", "timestamp": at + timedelta(days=2)})
    write_raw(settings, more)
    run_dbt(settings, "run", "--select", "stg_tracking__events", "fct_funnel_entries", "fct_funnel_daily")

    after, rebuilt = table_rows(settings, "")
    assert rebuilt > first_built
    reference = reference_rows(events + more, "", rebuilt)
    assert after.keys() == reference.keys()
    for key, row in after.items():
        same(row, reference[key], key)
    day0 = {key: row for key, row in after.items() if key[1] == DAY0.date()}
    assert day0 and all(row["_built_at"] == first_built for row in day0.values())  # not rebuilt: older than a window
    assert all(row == before[key] for key, row in day0.items())
    assert {key[1] for key, row in after.items() if row["_built_at"] == rebuilt} >= {
        (late_day + timedelta(days=d)).date() for d in (0, 2)
    }


def test_funnel_and_experiment_questions_count_against_the_read_keys_rate_limit(
    built: tuple[Settings, list[dict[str, Any]]],
) -> None:
    settings, _ = built
    limited = settings.model_copy(
        update={
            "api_rate_limit_queries": 2,
            "api_rate_limit_window_s": 60.0,
            "redis_key_prefix": f"test:rl:{uuid.uuid4().hex[:8]}:",
        }
    )
    create_tenant_with_keys(TenantStore(limited.tenants_db), "t2", "wk_funnels_t2", "rk_funnels_t2")
    body = {"funnel": "checkout", "start": DAY0.isoformat(), "end": (DAY0 + timedelta(days=1)).isoformat()}
    with TestClient(create_app(limited)) as client:
        auth = {"Authorization": "Bearer rk_funnels_t2"}
        statuses = [client.post("/api/v1/funnels/query", headers=auth, json=body).status_code for _ in range(2)]
        statuses.append(client.get("/api/v1/experiments/checkout_button", headers=auth).status_code)
        refused = client.post("/api/v1/funnels/query", headers=auth, json=body)
    assert statuses[:2] == [200, 200] and statuses[2] == 429
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0


# Two funnels given through --vars: the checkout funnel (ordered: the touched users are those with
# events of its types) and a strict one (any event counts) with an exclusion and a 2-hour window.
INCREMENTAL_FUNNELS: dict[str, dict[str, Any]] = {
    "checkout": {"steps": [{"event_type": t} for t in STEPS], "window": "1d", "breakdowns": ["country", "device"]},
    "guarded": {
        "steps": [{"event_type": "page_view"}, {"event_type": "add_to_cart"}, {"event_type": "purchase"}],
        "window": "2h",
        "order": "strict",
        "exclusions": [{"event_type": "refund", "between": [1, 3]}],
        "breakdowns": ["country"],
    },
}


def _event(user: str, event_type: str, at: datetime, tenant: str = "t1", **more: Any) -> dict[str, Any]:
    return {"tenant_id": tenant, "user_id": user, "event_type": event_type, "timestamp": at, "is_bot": False,
            "country": "US", "device": "mobile", **more}  # fmt: skip


def _sessions(rng: random.Random, prefix: str, first: datetime, last: datetime, users: int) -> list[dict[str, Any]]:
    """Random users, each with attempts starting on one UTC day in [first, last] (later steps may spill over)."""
    out: list[dict[str, Any]] = []
    for u in range(users):
        tenant = rng.choice(["t1", "t2"])
        country, device = rng.choice(["US", "DE", "IN"]), rng.choice(["mobile", "desktop"])
        home = first + timedelta(seconds=rng.randrange(int((last - first).total_seconds())))
        day_start = home.replace(hour=0, minute=0, second=0)
        for _ in range(rng.randrange(1, 4)):
            at = max(first, day_start + timedelta(seconds=rng.randrange(86_400)))
            at = min(at, last)
            for step in rng.choice([STEPS[:1], STEPS[:2], STEPS[:3], STEPS, ["page_view", "refund", "purchase"]]):
                out.append(_event(f"{prefix}{u}", step, at, tenant, country=country, device=device))
                at += timedelta(seconds=rng.choice([5, 60, 600, 3600, 30 * 3600]), microseconds=rng.randrange(10**6))
    return out


def _table(settings: Settings, name: str, keys: str) -> list[tuple[Any, ...]]:
    """Every row of a funnel table but its _built_at, in key order."""
    con = warehouse.connect(settings, read_only=True)
    try:
        return con.execute(
            f"SELECT * EXCLUDE (_built_at) FROM {settings.warehouse_alias}.main.{name} ORDER BY {keys}"
        ).fetchall()
    finally:
        con.close()


def _entry(settings: Settings, key: str, user: str) -> list[dict[str, Any]]:
    con = warehouse.connect(settings, read_only=True)
    try:
        cursor = con.execute(
            f"SELECT * FROM {settings.warehouse_alias}.main.fct_funnel_entries WHERE funnel_key = ? AND user_key = ?"
            " ORDER BY cohort_day",
            [key, user],
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    finally:
        con.close()


def test_an_incremental_run_equals_a_full_rebuild_and_the_reference(
    stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A first build, then a later batch: new users, late events of existing users that complete or
    restart an attempt, events that convert a pending user, an exclusion arriving late, and a window
    that closes between the two builds with no new event. The incremental run recomputes only the
    touched users' entries and re-aggregates only the days that can have changed; both tables then
    equal a full rebuild over the same events (but _built_at), and the daily one the API's path and
    the reference."""
    settings = lake_settings(stack_settings, tmp_path_factory.mktemp("funnels_incremental"), "funnels_inc")
    funnels = {key: Funnel.model_validate(value) for key, value in INCREMENTAL_FUNNELS.items()}
    dbt_vars = ["--vars", json.dumps({"funnels": INCREMENTAL_FUNNELS})]
    models = ["stg_tracking__events", "fct_funnel_entries", "fct_funnel_daily"]
    rng = random.Random(11)
    now = datetime.now(UTC).replace(microsecond=0)
    day = timedelta(days=1)
    oldest = (now - 4 * day).replace(hour=0, minute=0, second=0)  # untouched by the second batch
    old = oldest + day + timedelta(hours=10)
    older = oldest + 2 * day + timedelta(hours=9)
    # Every window is closed long before the first build or still open after the last one, but the
    # closing user's: so a full rebuild a minute later counts the same pending users.
    first = _sessions(rng, "a", oldest, now - day - timedelta(minutes=15), 80)
    first += [
        _event("restart", "page_view", old),  # depth 2; later a new attempt the same day converts
        _event("restart", "add_to_cart", old + timedelta(seconds=60)),
        *(_event("complete", s, older + timedelta(seconds=10 * i)) for i, s in enumerate(STEPS[:3])),
        _event("pending", "page_view", now - timedelta(minutes=30), "t2"),  # converts in the second batch
        _event("pending", "add_to_cart", now - timedelta(minutes=29), "t2"),
        _event("closing", "page_view", now - day + timedelta(seconds=45), "t3"),  # its window closes before run 2
        _event("refunded", "page_view", older, "t2", country="DE"),  # converts; an exclusion comes late
        _event("refunded", "add_to_cart", older + timedelta(seconds=60), "t2", country="DE"),
        _event("refunded", "purchase", older + timedelta(seconds=120), "t2", country="DE"),
    ]
    write_raw(settings, first)
    run_dbt(settings, "build", "--select", *models, "--indirect-selection", "cautious", "--exclude-resource-type",
            "unit_test", *dbt_vars)  # fmt: skip
    before, first_built = table_rows(settings, "", "checkout")
    closing_key = ("t3", (now - day + timedelta(seconds=45)).date(), None)
    assert before[closing_key]["pending"] == (1 if first_built < now - day + timedelta(seconds=45) + day else 0)

    # The second batch: late steps of first-batch users who entered two or three days ago, a restart,
    # a completion, a conversion of a pending user, a late exclusion, and new users (today, and two
    # and three days ago). Nothing reaches yesterday, where only the closing user's window changes.
    touched_days = {(now - 2 * day).date(), (now - 3 * day).date()}
    homes = {e["user_id"]: e["timestamp"].date() for e in reversed(first) if e["event_type"] == "page_view"}
    late_users = sorted(u for u, d in homes.items() if u.startswith("a") and d in touched_days)[:15]
    second = []
    for user in late_users:
        mine = [e for e in first if e["user_id"] == user]
        at = mine[0]["timestamp"] + timedelta(seconds=rng.randrange(1, 7200))
        for step in rng.choice([STEPS[1:], STEPS[2:], ["refund"]]):
            second.append({**mine[0], "event_type": step, "timestamp": at})
            at += timedelta(seconds=rng.randrange(1, 600))
    second += [
        *(_event("restart", s, old + timedelta(hours=1, seconds=10 * i)) for i, s in enumerate(STEPS)),
        _event("complete", "purchase", older + timedelta(hours=2)),
        _event("pending", "checkout", now - timedelta(minutes=20), "t2"),
        _event("pending", "purchase", now - timedelta(minutes=19), "t2"),
        _event("refunded", "refund", older + timedelta(seconds=90), "t2", country="DE"),
    ]
    second += _sessions(rng, "b", old - timedelta(hours=10), now - 2 * day, 30)
    second += _sessions(rng, "c", now - timedelta(minutes=50), now - timedelta(minutes=40), 10)
    write_raw(settings, second)
    wait = (now - day + timedelta(seconds=46) + day - datetime.now(UTC)).total_seconds()
    if wait > 0:
        time.sleep(wait)  # the closing user's window is over: its day must be re-aggregated
    run_dbt(settings, "run", "--select", *models, *dbt_vars)

    events = first + second
    after, rebuilt = table_rows(settings, "", "checkout")
    assert rebuilt > first_built
    # Yesterday's only change is the closing user's window: no entry of it was recomputed, yet its
    # rows were re-aggregated (the entry was pending at the last build and no longer is).
    assert after[closing_key]["pending"] == 0 and after[closing_key]["_built_at"] == rebuilt
    assert lake_query(
        settings,
        "SELECT DISTINCT _built_at FROM {lake}.main.fct_funnel_entries WHERE funnel_key = 'checkout'"
        " AND cohort_day = ?",
        [closing_key[1]],
    ) == [(first_built,)]
    assert [r["depth"] for r in _entry(settings, "checkout", "restart")] == [4]
    assert _entry(settings, "checkout", "restart")[0]["step_1_at"] == old + timedelta(hours=1)
    assert [r["depth"] for r in _entry(settings, "checkout", "complete")] == [4]
    assert [r["depth"] for r in _entry(settings, "checkout", "pending")] == [4]
    assert [r["excluded"] for r in _entry(settings, "guarded", "refunded")] == [True]
    # The oldest day had no entry touched and nothing pending: its rows were left as they were.
    untouched = {k: r for k, r in after.items() if k[1] == oldest.date()}
    assert untouched and all(r["_built_at"] == first_built for r in untouched.values())
    assert all(r == before[k] for k, r in untouched.items())

    for key, funnel in funnels.items():
        for breakdown in ["", *funnel.breakdowns]:
            table, _ = table_rows(settings, breakdown, key)
            api = api_rows(settings, breakdown, rebuilt, funnel)
            reference = reference_rows(events, breakdown, rebuilt, funnel)
            assert table.keys() == api.keys() == reference.keys(), (key, breakdown)
            for k, row in table.items():
                assert row["steps"] == len(funnel.steps)
                same(row, api[k], (key, k))
                same(row, reference[k], (key, k))

    entries_keys = "funnel_key, tenant_id, user_key, cohort_day"
    daily_keys = "funnel_key, tenant_id, cohort_day, breakdown, breakdown_value"
    incremental = _table(settings, "fct_funnel_entries", entries_keys), _table(settings, "fct_funnel_daily", daily_keys)
    # With nothing staged since, a run recomputes nothing and changes nothing.
    run_dbt(settings, "run", "--select", *models, *dbt_vars)
    again = _table(settings, "fct_funnel_entries", entries_keys), _table(settings, "fct_funnel_daily", daily_keys)
    assert again == incremental
    assert lake_query(settings, "SELECT max(_built_at) FROM {lake}.main.fct_funnel_daily")[0][0] == rebuilt
    # The full rebuild runs in batches of users, both funnels into the one scratch table (the first build
    # above was whole in one statement): the same rows either way.
    batched = {"funnels": INCREMENTAL_FUNNELS, "funnel_build_batch_events": 100}
    done = run_dbt(settings, "run", "--full-refresh", "--select", "fct_funnel_entries", "fct_funnel_daily",
                   "--vars", json.dumps(batched))  # fmt: skip
    for key in funnels:
        assert f"fct_funnel_entries: funnel {key} built whole in " in done.stdout, key
    full = _table(settings, "fct_funnel_entries", entries_keys), _table(settings, "fct_funnel_daily", daily_keys)
    assert incremental[0] == full[0]
    assert incremental[1] == full[1]

    # A replay from two days ago (rebuild_from re-stages the events since): every user's entries from
    # a window before it are recomputed, the touched users' too, and the tables stay the same.
    replay = {"funnels": INCREMENTAL_FUNNELS, "rebuild_from": (now - 2 * day).isoformat()}
    run_dbt(settings, "run", "--select", *models, "--vars", json.dumps(replay))
    replayed = _table(settings, "fct_funnel_entries", entries_keys), _table(settings, "fct_funnel_daily", daily_keys)
    assert replayed == full
    assert lake_query(settings, "SELECT count(DISTINCT _built_at) FROM {lake}.main.fct_funnel_entries")[0][0] == 2

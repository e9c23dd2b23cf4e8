"""The experiment models on DuckDB: exposures, per-user metric values and per-variant sums.

Events are written straight into a fresh lake's raw_events (no Kafka: the models read the staged
events), built with dbt, and checked against the same numbers computed here in plain Python from
the definition in dbt_project.yml (experiment checkout_button: purchase within 7 days of first
exposure, and revenue within 7 days with its 7 days before as the CUPED covariate).
"""

from __future__ import annotations

import copy
import json
import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from analytics_core.funnels import get_definitions
from analytics_core.settings import Settings
from analytics_core.stats import bundle
from analytics_core.stats.duckdb_udf import ROW_STRUCTURE
from analytics_core.stats.experiments import Row, analyze
from analytics_core.warehouse import DBT_PROJECT_DIR
from api.app import create_app
from tenants import TenantStore, create_tenant_with_keys
from tests.integration.dbt_runs import lake_query, run_dbt
from tests.integration.lake_events import lake_settings, write_raw
from tests.unit.test_stats_bundle import bigquery_text

pytestmark = pytest.mark.integration

EXPERIMENT = get_definitions().experiments["checkout_button"]
MODELS = (
    "stg_tracking__events",
    "fct_experiment_exposures",
    "fct_experiment_user_metrics",
    "fct_experiment_variant_stats",
    "fct_experiment_significance",
)
T0 = datetime(2026, 11, 2, tzinfo=UTC)
US = timedelta(microseconds=1)


def event(tenant: str, user: str, kind: str, at: datetime, **fields: Any) -> dict[str, Any]:
    return {"tenant_id": tenant, "user_id": user, "event_type": kind, "timestamp": at, "is_bot": False, **fields}


def exposure(tenant: str, user: str, variant: str, at: datetime, **fields: Any) -> dict[str, Any]:
    return event(tenant, user, "checkout", at, experiment_key="checkout_button", experiment_variant=variant, **fields)


def purchase(tenant: str, user: str, at: datetime, revenue: float, **fields: Any) -> dict[str, Any]:
    return event(tenant, user, "purchase", at, revenue=revenue, currency="USD", **fields)


def generated(seed: int = 5) -> list[dict[str, Any]]:
    """Two tenants, a few hundred users in two variants, purchases before, during and after the span."""
    rng = random.Random(seed)
    within = timedelta(seconds=EXPERIMENT.metrics["purchase_7d"].within)
    out: list[dict[str, Any]] = []
    for tenant in ("t1", "t2"):
        for u in range(300):
            user = f"{tenant}-u{u}"
            variant = "treatment" if rng.random() < 0.5 else "control"
            first = T0 + timedelta(seconds=rng.randrange(0, 10 * 86_400))
            out.append(exposure(tenant, user, variant, first))
            if rng.random() < 0.3:  # exposed again, same variant: the first exposure counts
                out.append(exposure(tenant, user, variant, first + timedelta(hours=rng.randrange(1, 100))))
            rate = 0.35 if variant == "treatment" else 0.25
            for _ in range(rng.randrange(0, 4)):
                if rng.random() < rate:
                    offset = timedelta(seconds=rng.randrange(-9 * 86_400, 10 * 86_400))
                    out.append(purchase(tenant, user, first + offset, round(rng.uniform(5, 200), 2)))
            if rng.random() < rate:  # bought in the session that showed the button: the purchase carries the tag
                tagged = {"experiment_key": "checkout_button", "experiment_variant": variant}
                at = first + timedelta(seconds=rng.choice([30, 600, 2 * 86_400]))  # 2 days: past checkout_purchase's
                out.append(purchase(tenant, user, at, 20.0, **tagged))
        # The span's edges: at its end counts, one microsecond later does not; before exposure is CUPED's.
        out.append(exposure(tenant, f"{tenant}-edge", "control", T0))
        out.append(purchase(tenant, f"{tenant}-edge", T0 + within, 10.0))
        out.append(purchase(tenant, f"{tenant}-edge", T0 + within + US, 1000.0))
        out.append(purchase(tenant, f"{tenant}-edge", T0 - US, 7.0))
        out.append(purchase(tenant, f"{tenant}-edge", T0 - within - US, 3000.0))  # before the pre-period
        # Excluded: two variants; a variant the definition does not list. Bots and other experiments ignored.
        out.append(exposure(tenant, f"{tenant}-both", "control", T0))
        out.append(exposure(tenant, f"{tenant}-both", "treatment", T0 + timedelta(hours=1)))
        out.append(exposure(tenant, f"{tenant}-odd", "blue", T0))
        out.append(exposure(tenant, f"{tenant}-bot", "control", T0) | {"is_bot": True})
        out.append(exposure(tenant, f"{tenant}-other", "control", T0) | {"experiment_key": "another"})
        # Before the experiment's start: not an exposure.
        out.append(exposure(tenant, f"{tenant}-early", "control", EXPERIMENT.start - timedelta(days=1)))
    return out


def expected(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Exposures, per-user values and per-variant sums, computed here from the rules in the models' headers."""
    start, end = EXPERIMENT.start, EXPERIMENT.end
    seen: dict[tuple[str, str], list[tuple[datetime, str]]] = defaultdict(list)
    for e in events:
        if e.get("experiment_key") != "checkout_button" or e["is_bot"] or not e.get("experiment_variant"):
            continue
        if e["timestamp"] < start or (end is not None and e["timestamp"] >= end):
            continue
        seen[(e["tenant_id"], e["user_id"])].append((e["timestamp"], e["experiment_variant"]))
    exposures, excluded = {}, {}
    for key, hits in seen.items():
        variants = {v for _, v in hits}
        if len(variants) > 1:
            excluded[key] = "several variants"
        elif variants - set(EXPERIMENT.variants):
            excluded[key] = "variant not in the definition"
        else:
            exposures[key] = (min(t for t, _ in hits), variants.pop())
    values: dict[tuple[str, str, str], tuple[float, float | None]] = {}
    for name, metric in EXPERIMENT.metrics.items():
        within = timedelta(seconds=metric.within)
        for (tenant, user), (first, _) in exposures.items():
            mine = [
                e
                for e in events
                if e["tenant_id"] == tenant and e["user_id"] == user and e["event_type"] == metric.event_type
                and not e["is_bot"] and all(e.get(f) in values for f, values in metric.where.items())
            ]  # fmt: skip
            after = [e for e in mine if first <= e["timestamp"] <= first + within]
            before = [e for e in mine if first - within <= e["timestamp"] < first]
            if metric.kind == "conversion":
                value, pre = float(bool(after)), float(bool(before))
            else:
                value, pre = sum(e["revenue"] for e in after), sum(e["revenue"] for e in before)
            values[(tenant, name, user)] = (value, pre if metric.cuped else None)
    sums: dict[tuple[str, str, str], list[float]] = {}
    for (tenant, name, user), (value, pre) in values.items():
        variant = exposures[(tenant, user)][1]
        acc = sums.setdefault((tenant, name, variant), [0, 0.0, 0.0, 0.0, 0.0, 0.0])
        p = pre or 0.0
        for i, x in enumerate((1, value, value * value, p, p * p, value * p)):
            acc[i] += x
    return {"exposures": exposures, "excluded": excluded, "values": values, "sums": sums}


@pytest.fixture(scope="module")
def built(
    stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, dict[str, Any]]]:
    folder: Path = tmp_path_factory.mktemp("experiments")
    settings = lake_settings(stack_settings, folder, "experiments")
    events = generated()
    write_raw(settings, events)
    # Unit tests of the incremental staging model need its table: they run once it exists (below).
    run_dbt(
        settings,
        "build",
        "--select",
        *MODELS,
        "--indirect-selection",
        "cautious",
        "--exclude-resource-type",
        "unit_test",
    )
    yield settings, expected(events)


def test_first_exposures_and_the_excluded_users(built: tuple[Settings, dict[str, Any]]) -> None:
    settings, want = built
    rows = lake_query(
        settings,
        "SELECT tenant_id, user_key, first_exposed_at, variant, excluded_reason"
        " FROM {lake}.main.fct_experiment_exposures WHERE experiment_key = 'checkout_button'",
    )
    got = {(t, u): (at, v) for t, u, at, v, why in rows if why is None}
    assert got == want["exposures"]
    assert {(t, u): why for t, u, _, _, why in rows if why is not None} == want["excluded"]
    assert not [r for r in rows if r[1].endswith(("-bot", "-other", "-early"))]


def test_per_user_values_follow_the_span_rules(built: tuple[Settings, dict[str, Any]]) -> None:
    settings, want = built
    rows = lake_query(
        settings,
        "SELECT tenant_id, metric, user_key, value, pre_value FROM {lake}.main.fct_experiment_user_metrics",
    )
    got = {(t, m, u): (v, p) for t, m, u, v, p in rows}
    assert got.keys() == want["values"].keys()
    for key, (value, pre) in want["values"].items():
        assert got[key][0] == pytest.approx(value, abs=1e-9), key
        assert (got[key][1] is None) == (pre is None), key
        if pre is not None:
            assert got[key][1] == pytest.approx(pre, abs=1e-9), key
    # The edge user: the purchase at the span's end counts, the one a microsecond later and the one
    # before the pre-period do not; the one a microsecond before exposure is the covariate.
    assert got[("t1", "revenue_7d", "t1-edge")] == (10.0, 7.0)
    assert got[("t1", "purchase_7d", "t1-edge")] == (1.0, None)


def test_variant_sums_are_the_sums_of_the_user_values(built: tuple[Settings, dict[str, Any]]) -> None:
    settings, want = built
    rows = lake_query(
        settings,
        "SELECT tenant_id, metric, variant, users, value_sum, value_sum_squares, pre_sum, pre_sum_squares,"
        " sum_products, planned_share, is_control FROM {lake}.main.fct_experiment_variant_stats"
        " WHERE experiment_key = 'checkout_button'",
    )
    assert len(rows) == 2 * len(EXPERIMENT.metrics) * len(EXPERIMENT.variants)
    for tenant, metric, variant, *numbers, share, control in rows:
        users, *sums = want["sums"][(tenant, metric, variant)]
        assert numbers[0] == users
        cuped = EXPERIMENT.metrics[metric].cuped
        for got, wanted in zip(numbers[1:], sums, strict=True):
            if got is None:
                assert not cuped
            else:
                assert got == pytest.approx(wanted, rel=1e-12, abs=1e-9)
        assert share == EXPERIMENT.variants[variant] and control == (variant == EXPERIMENT.control)


def test_the_models_dbt_unit_tests_pass(built: tuple[Settings, dict[str, Any]]) -> None:
    settings, _ = built
    done = run_dbt(settings, "test", "--select", "fct_experiment_user_metrics,test_type:unit")
    assert "PASS=1 " in done.stdout, done.stdout[-3000:]


def test_the_significance_table_is_the_stats_of_the_variant_sums(built: tuple[Settings, dict[str, Any]]) -> None:
    """Each row equals analytics_core/stats' answer for the sums computed here (the statistics
    themselves are checked against scipy, statsmodels and gbstats in tests/unit/test_experiment_stats.py)."""
    settings, want = built
    columns = [f.name for f in fields(Row)]
    rows = lake_query(
        settings,
        f"SELECT tenant_id, experiment_key, is_primary, {', '.join(columns)}"
        " FROM {lake}.main.fct_experiment_significance",
    )
    got = {(r[0], r[3], r[5]): (r[2], dict(zip(columns, r[3:], strict=True))) for r in rows}
    expected_rows = {}
    for tenant in ("t1", "t2"):
        for name, metric in EXPERIMENT.metrics.items():
            variants = {}
            for variant in EXPERIMENT.variants:
                users, total, squares, pre, pre_squares, products = want["sums"][(tenant, name, variant)]
                if metric.kind == "conversion":
                    variants[variant] = {"users": users, "conversions": int(total)}
                else:
                    variants[variant] = {"users": users, "sum": total, "sum_squares": squares}
                    if metric.cuped:
                        variants[variant] |= {"pre_sum": pre, "pre_sum_squares": pre_squares, "sum_products": products}
            document = {
                "metric": name,
                "kind": metric.kind,
                "control": EXPERIMENT.control,
                "split": EXPERIMENT.variants,
                "alpha": EXPERIMENT.alpha,
                "sequential": EXPERIMENT.sequential,
                "higher_is_better": metric.higher_is_better,
                "variants": variants,
            }
            for row in analyze(document):
                expected_rows[(tenant, name, row.variant)] = (name == EXPERIMENT.primary, row.to_dict())
    assert got.keys() == expected_rows.keys()
    for key, (primary, row) in expected_rows.items():
        assert got[key][0] == primary, key
        for column, value in row.items():
            if isinstance(value, float):
                assert got[key][1][column] == pytest.approx(value, rel=1e-9, abs=1e-12), (key, column)
            else:
                assert got[key][1][column] == value, (key, column)


def test_the_significance_table_has_the_columns_the_bigquery_model_selects(
    built: tuple[Settings, dict[str, Any]],
) -> None:
    """tests/integration/test_dbt_bigquery.py finds these names, order and types in the model's BigQuery SQL."""
    settings, _ = built
    described = lake_query(
        settings, "SELECT column_name, column_type FROM (DESCRIBE {lake}.main.fct_experiment_significance)"
    )
    assert [name for name, _ in described] == [
        "tenant_id",
        "experiment_key",
        "is_primary",
        *columns_of_row(),
        "_built_at",
    ]
    row_types = json.loads(ROW_STRUCTURE)[0]
    assert {name: sql_type for name, sql_type in described if name in row_types} == row_types


def columns_of_row() -> list[str]:
    return [f.name for f in fields(Row)]


def test_the_bigquery_function_on_the_bigquery_document_gives_the_tables_numbers_exactly(
    built: tuple[Settings, dict[str, Any]],
) -> None:
    """What BigQuery would compute from these variant sums: the document as its branch of the model
    writes it (tests/unit/test_stats_bundle.py's bigquery_text), run through the function's body
    (the bundle, executed on its own), equals DuckDB's table number for number."""
    settings, _ = built
    namespace: dict[str, Any] = {"__name__": "experiment_analyze_body"}
    body = bundle.rendered(bundle.TARGET.read_text(encoding="utf-8"))  # compiled without this file's __future__
    exec(compile(body, "experiment_analyze.py", "exec", dont_inherit=True), namespace)
    stats = lake_query(
        settings,
        "SELECT tenant_id, metric, kind, variant, planned_share, users, value_sum, value_sum_squares, pre_sum,"
        " pre_sum_squares, sum_products FROM {lake}.main.fct_experiment_variant_stats"
        " WHERE experiment_key = 'checkout_button'",
    )
    documents: dict[tuple[str, str], dict[str, Any]] = {}
    for tenant, metric, kind, variant, share, users, total, squares, pre, pre_squares, products in stats:
        cuped = EXPERIMENT.metrics[metric].cuped
        doc = documents.setdefault(
            (tenant, metric),
            {
                "metric": metric,
                "kind": kind,
                "control": EXPERIMENT.control,
                "split": {},
                "alpha": EXPERIMENT.alpha,
                "sequential": EXPERIMENT.sequential,
                "higher_is_better": EXPERIMENT.metrics[metric].higher_is_better,
                "variants": {},
            },
        )
        doc["split"][variant] = float(share)
        if kind == "conversion":
            doc["variants"][variant] = {"users": users, "conversions": int(total)}
        else:
            doc["variants"][variant] = {"users": users, "sum": total, "sum_squares": squares}
        if cuped:
            doc["variants"][variant] |= {"pre_sum": pre or 0, "sum_products": products or 0}
            if kind != "conversion":
                doc["variants"][variant]["pre_sum_squares"] = pre_squares or 0
    columns = columns_of_row()
    table = lake_query(
        settings, f"SELECT tenant_id, {', '.join(columns)} FROM {{lake}}.main.fct_experiment_significance"
    )
    got = {(r[0], r[1], r[3]): dict(zip(columns, r[1:], strict=True)) for r in table}
    computed = {}
    for (tenant, metric), doc in documents.items():
        for row in json.loads(namespace["main"](bigquery_text(doc))):
            computed[(tenant, metric, row["variant"])] = row
    assert computed == got


def test_the_api_serves_the_definitions_and_each_tenants_results(built: tuple[Settings, dict[str, Any]]) -> None:
    settings, want = built
    store = TenantStore(settings.tenants_db)
    for tenant in ("t1", "t2"):
        create_tenant_with_keys(store, tenant, f"wk_experiments_{tenant}", f"rk_experiments_{tenant}")
    with TestClient(create_app(settings)) as client:
        auth = {"Authorization": "Bearer rk_experiments_t1"}
        listed = client.get("/api/v1/experiments", headers=auth).json()["experiments"]
        assert [e["key"] for e in listed] == ["checkout_button"]
        assert listed[0]["variants"] == EXPERIMENT.variants
        primary = {m["key"]: m["primary"] for m in listed[0]["metrics"]}
        assert primary == {"checkout_purchase": True, "purchase_7d": False, "revenue_7d": False}
        funnels = client.get("/api/v1/funnels", headers=auth).json()["funnels"]
        assert funnels[0]["key"] == "checkout" and funnels[0]["window_s"] == 86_400

        for tenant in ("t1", "t2"):
            answer = client.get(
                "/api/v1/experiments/checkout_button", headers={"Authorization": f"Bearer rk_experiments_{tenant}"}
            )
            assert answer.status_code == 200, answer.text
            body = answer.json()
            users = {v: int(want["sums"][(tenant, "checkout_purchase", v)][0]) for v in EXPERIMENT.variants}
            assert body["users"] == users
            reasons = [why for (t, _), why in want["excluded"].items() if t == tenant]
            assert body["excluded"] == {why: reasons.count(why) for why in set(reasons)}
            assert [r["metric"] for r in body["rows"]] == ["checkout_purchase", "purchase_7d", "revenue_7d"]
            rows = lake_query(
                settings,
                "SELECT metric, variant, absolute_p_value, verdict, srm_p_value"
                " FROM {lake}.main.fct_experiment_significance WHERE tenant_id = ? ORDER BY is_primary DESC, metric",
                [tenant],
            )
            assert [(r["metric"], r["variant"], r["absolute_p_value"], r["verdict"]) for r in body["rows"]] == [
                r[:4] for r in rows
            ]
            assert body["verdicts"] == {"treatment": rows[0][3]} and body["srm_p_value"] == rows[0][4]
            assert body["built_at"] is not None

        assert client.get("/api/v1/experiments/nope", headers=auth).status_code == 404
        assert client.get("/api/v1/experiments/Bad-Key", headers=auth).status_code == 400
        assert client.get("/api/v1/experiments/checkout_button").status_code == 401


# --- incremental builds -------------------------------------------------------------------------

TABLES = (
    "fct_experiment_exposures",
    "fct_experiment_user_metrics",
    "fct_experiment_variant_stats",
    "fct_experiment_significance",
)
DAY = timedelta(days=1)


def later_batch(first: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events of a later load: new users, late purchases of users exposed before (in their span, past
    it, before their exposure), users who now see the other variant, exposures earlier than the first
    one seen, and the exposure of a user whose purchases were loaded before it."""
    exposures = expected(first)["exposures"]
    users = sorted(exposures)
    other = {"control": "treatment", "treatment": "control"}
    out: list[dict[str, Any]] = []
    for tenant, user in users[:12]:  # late purchases: in the span, a microsecond past it, in the CUPED period
        at, _ = exposures[(tenant, user)]
        out.append(purchase(tenant, user, at + DAY, 11.0))
        out.append(purchase(tenant, user, at + 7 * DAY + US, 500.0))
        out.append(purchase(tenant, user, at - 2 * DAY, 13.0))
    for tenant, user in users[12:18]:  # bought in the session that showed the button
        at, variant = exposures[(tenant, user)]
        tagged = {"experiment_key": "checkout_button", "experiment_variant": variant}
        out.append(purchase(tenant, user, at + timedelta(minutes=5), 20.0, **tagged))
    for tenant, user in users[18:22]:  # now seen in the other variant too: excluded
        at, variant = exposures[(tenant, user)]
        out.append(exposure(tenant, user, other[variant], at + timedelta(hours=2)))
    for tenant, user in users[22:26]:  # an exposure loaded late, 3 days before the first one known
        at, variant = exposures[(tenant, user)]
        out.append(exposure(tenant, user, variant, at - 3 * DAY))
    for tenant, user in users[26:28]:  # exposed again later, same variant: nothing changes
        at, variant = exposures[(tenant, user)]
        out.append(exposure(tenant, user, variant, at + 3 * DAY))
    for tenant in ("t1", "t2"):
        for u in range(15):  # new users, with purchases before and after their exposure
            user, at = f"{tenant}-new{u}", T0 + timedelta(days=12, hours=u)
            out.append(exposure(tenant, user, "treatment" if u % 2 else "control", at))
            out.append(purchase(tenant, user, at + timedelta(hours=u), 5.0 + u))
            out.append(purchase(tenant, user, at - timedelta(hours=u + 1), 7.0 + u))
        # Exposed now, after purchases loaded in the first batch (in the span and in the CUPED period).
        out.append(exposure(tenant, f"{tenant}-later", "control", T0 + 9 * DAY))
        out.append(exposure(tenant, f"{tenant}-both", "control", T0 + 2 * DAY))  # still excluded
        out.append(exposure(tenant, f"{tenant}-bot2", "control", T0 + 2 * DAY) | {"is_bot": True})
    return out


def first_batch() -> list[dict[str, Any]]:
    out = generated()
    for tenant in ("t1", "t2"):
        out.append(purchase(tenant, f"{tenant}-later", T0 + 10 * DAY, 30.0))
        out.append(purchase(tenant, f"{tenant}-later", T0 + 8 * DAY, 40.0))
        out.append(purchase(tenant, f"{tenant}-later", T0 + 1 * DAY, 50.0))  # before the CUPED period
    return out


def table_contents(settings: Settings, table: str) -> list[tuple[Any, ...]]:
    """Every row of `table` but its `_built_at`, in key order."""
    return lake_query(settings, f"SELECT * EXCLUDE (_built_at) FROM {{lake}}.main.{table} ORDER BY ALL")


def assert_same_tables(settings: Settings, rebuilt: Settings) -> None:
    """The experiment tables of `settings` hold the rows of `rebuilt`'s (floats to 1e-9)."""
    for table in TABLES:
        got, want = table_contents(settings, table), table_contents(rebuilt, table)
        assert len(got) == len(want), table
        for row, other in zip(got, want, strict=True):
            assert len(row) == len(other)
            for a, b in zip(row, other, strict=True):
                if isinstance(b, float):
                    assert a == pytest.approx(b, rel=1e-9, abs=1e-9), (table, row, other)
                else:
                    assert a == b, (table, row, other)


def build_experiments(settings: Settings, *args: str) -> None:
    run_dbt(settings, "run", "--select", *MODELS, *args)


@pytest.fixture(scope="module")
def incremental(
    stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, Settings, list[dict[str, Any]]]]:
    """A lake built after a first batch and again after a later one, and a lake built once from both."""
    folder: Path = tmp_path_factory.mktemp("experiments-incremental")
    settings = lake_settings(stack_settings, folder / "incremental", "experiments-incremental")
    rebuilt = lake_settings(stack_settings, folder / "rebuilt", "experiments-rebuilt")
    first, later = first_batch(), []
    write_raw(settings, first)
    build_experiments(settings)
    later = later_batch(first)
    write_raw(settings, later)
    build_experiments(settings)
    write_raw(rebuilt, first + later)
    build_experiments(rebuilt)
    yield settings, rebuilt, first + later


def test_an_incremental_build_equals_a_full_build_and_the_reference(
    incremental: tuple[Settings, Settings, list[dict[str, Any]]],
) -> None:
    settings, rebuilt, events = incremental
    assert_same_tables(settings, rebuilt)
    want = expected(events)
    rows = lake_query(
        settings,
        "SELECT tenant_id, user_key, first_exposed_at, variant, excluded_reason"
        " FROM {lake}.main.fct_experiment_exposures",
    )
    assert {(t, u): (at, v) for t, u, at, v, why in rows if why is None} == want["exposures"]
    assert {(t, u): why for t, u, _, _, why in rows if why is not None} == want["excluded"]
    rows = lake_query(
        settings, "SELECT tenant_id, metric, user_key, value, pre_value FROM {lake}.main.fct_experiment_user_metrics"
    )
    got = {(t, m, u): (v, p) for t, m, u, v, p in rows}
    assert got.keys() == want["values"].keys()
    for key, (value, pre) in want["values"].items():
        assert got[key][0] == pytest.approx(value, abs=1e-9), key
        assert got[key][1] == (None if pre is None else pytest.approx(pre, abs=1e-9)), key
    # What the later batch changed: the late exposure moved the span back, the second variant excluded
    # the user, the user exposed after their purchases counts them.
    assert got[("t1", "revenue_7d", "t1-later")] == (30.0, 40.0)
    assert got[("t1", "purchase_7d", "t1-later")] == (1.0, None)
    rows = lake_query(
        settings,
        "SELECT tenant_id, metric, variant, users, value_sum FROM {lake}.main.fct_experiment_variant_stats",
    )
    for tenant, metric, variant, users, total in rows:
        assert (users, total) == (
            want["sums"][(tenant, metric, variant)][0],
            pytest.approx(want["sums"][(tenant, metric, variant)][1], rel=1e-12, abs=1e-9),
        )


def test_a_later_build_without_new_events_changes_nothing(
    incremental: tuple[Settings, Settings, list[dict[str, Any]]],
) -> None:
    settings, rebuilt, _ = incremental
    build_experiments(settings)
    assert_same_tables(settings, rebuilt)


def test_a_replay_from_rebuild_from_equals_a_full_build(
    incremental: tuple[Settings, Settings, list[dict[str, Any]]],
) -> None:
    """`rebuild_from` re-stages the events from then on: counted once, not twice."""
    settings, rebuilt, _ = incremental
    build_experiments(settings, "--vars", '{rebuild_from: "2026-11-08T00:00:00+00:00"}')
    assert_same_tables(settings, rebuilt)


def test_a_changed_definition_rebuilds_the_experiment(
    incremental: tuple[Settings, Settings, list[dict[str, Any]]],
) -> None:
    """A later start and another span for one metric: the experiment's rows are built again whole, as a
    full build with the new definition has them (users exposed only before the start are gone)."""
    settings, rebuilt, _ = incremental
    raw = yaml_experiments()
    raw["checkout_button"]["start"] = (T0 + 5 * DAY).isoformat()
    raw["checkout_button"]["metrics"]["purchase_7d"]["within"] = "3d"
    changed = ["--vars", json.dumps({"experiments": raw})]
    build_experiments(settings, *changed)
    build_experiments(rebuilt, *changed, "--full-refresh")
    assert_same_tables(settings, rebuilt)
    starts = lake_query(settings, "SELECT min(first_exposed_at) FROM {lake}.main.fct_experiment_exposures")
    assert starts[0][0] >= T0 + 5 * DAY
    # Back to the project's definition: rebuilt again, as a full build has it.
    build_experiments(settings)
    build_experiments(rebuilt, "--full-refresh")
    assert_same_tables(settings, rebuilt)


def yaml_experiments() -> dict[str, Any]:
    """`vars: experiments` of dbt_project.yml, as written there."""
    project = yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text())
    return copy.deepcopy(project["vars"]["experiments"])

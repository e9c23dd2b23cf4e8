"""Metric definition fingerprints: the same in dbt (Jinja) and in Python; what the engine does with stale rollups."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import yaml

from analytics_core.catalogue import DBT_PROJECT_FILE, Catalogue, definition_vars, get_catalogue
from analytics_core.dbt import run_dbt
from analytics_core.settings import Settings
from api.engine import definitions
from api.engine.planner import Plan, plan
from api.engine.validation import validate
from api.models import QueryRequest

PROJECT_VARS = yaml.safe_load(DBT_PROJECT_FILE.read_text())["vars"]
# Spelled the loose ways the YAML allows: defaults left out, event types unsorted and repeated, no
# sketch_dimension_sets; the normalised definition must not depend on them.
LOOSE = {
    "dimensions": {"event_type": {"rollup": True}, "country": {"rollup": True}, "page": {"rollup": False}},
    "dimension_sets": [[], ["country"], ["event_type", "country"]],
    "metrics": {
        "views": {"kind": "count"},
        "carts": {
            "kind": "count",
            "humans_only": True,
            "event_types": ["checkout_started", "add_to_cart", "add_to_cart"],
        },
        "bot_carts": {"kind": "count", "humans_only": False, "event_types": ["add_to_cart"], "column": "ignored"},
        "basket": {"kind": "sum", "column": "revenue", "event_types": ["add_to_cart"], "description": "x"},
        "carters": {"kind": "unique", "column": "user_key", "event_types": ["add_to_cart"]},
        "cart_rate": {"kind": "ratio", "numerator": "carts", "denominator": "views"},
    },
}


def dbt_fingerprints(settings: Settings, dbt_vars: dict | None = None) -> dict[str, str]:
    """What the Jinja macro computes: `dbt run-operation print_metric_fingerprints`, its JSON line."""
    scratch = settings.warehouse_path / "dbt"
    args = ["run-operation", "print_metric_fingerprints", "--quiet"]
    if dbt_vars:
        args += ["--vars", json.dumps(dbt_vars)]
    done = run_dbt(settings, args, scratch / "target", scratch / "logs", capture=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("{"))
    return json.loads(line)


def test_jinja_and_python_fingerprints_agree_for_every_metric_of_the_catalogue(lake: Settings) -> None:
    python = get_catalogue().fingerprints(*definition_vars())
    assert set(python) == set(get_catalogue().stored_metrics) and "conversion_rate" not in python
    assert dbt_fingerprints(lake) == python


def test_jinja_and_python_agree_on_a_loosely_written_catalogue_and_other_vars(lake: Settings) -> None:
    dbt_vars = {"metric_catalogue": LOOSE, "hll_precision": 12, "metric_logic_version": 7}
    python = Catalogue.model_validate(LOOSE).fingerprints(12, 7)
    assert set(python) == {"views", "carts", "bot_carts", "basket", "carters"}
    assert dbt_fingerprints(lake, dbt_vars) == python


def test_jinja_and_python_agree_on_purchase_metrics_with_a_tenants_own_mapping(lake: Settings) -> None:
    catalogue = json.loads(json.dumps(LOOSE))
    catalogue["metrics"]["buys"] = {"kind": "count", "event_types": ["purchase"]}
    catalogue["metrics"]["takings"] = {"kind": "sum", "column": "revenue", "event_types": ["purchase", "refund"]}
    catalogue["purchases"] = {
        "event_types": ["purchase", "Order Completed"],
        "tenants": {"shop": {"event_types": ["checkout_done"]}, "same": {"revenue_properties": ["amount"]}},
    }
    dbt_vars = {"metric_catalogue": catalogue, "hll_precision": 12, "metric_logic_version": 7}
    python = Catalogue.model_validate(catalogue).fingerprints(12, 7)
    assert dbt_fingerprints(lake, dbt_vars) == python
    plain = Catalogue.model_validate({**catalogue, "purchases": {}}).fingerprints(12, 7)
    # The mapping's event types enter the purchase metrics' fingerprints, and no other metric's.
    assert {m for m in python if python[m] != plain[m]} == {"buys", "takings"}
    catalogue["purchases"]["tenants"]["same"] = {"revenue_properties": ["total"]}  # revenue is the collector's
    assert Catalogue.model_validate(catalogue).fingerprints(12, 7) == python


def test_what_changes_numbers_changes_the_fingerprint_and_nothing_else_does() -> None:
    base = Catalogue.model_validate(LOOSE)
    prints = base.fingerprints(14, 1)

    def changed(**edits: object) -> dict[str, str]:
        raw = json.loads(json.dumps(LOOSE))
        for path, value in edits.items():
            *parents, last = path.split("__")
            target = raw
            for key in parents:
                target = target[key]
            target[last] = value
        return Catalogue.model_validate(raw).fingerprints(14, 1)

    assert changed(metrics__views__description="new words") == prints
    assert changed(metrics__carts__event_types=["add_to_cart", "checkout_started"]) == prints  # same set
    assert changed(metrics__views__humans_only=True) == prints  # the default, written out
    assert changed(metrics__carts__event_types=["add_to_cart"])["carts"] != prints["carts"]
    assert changed(metrics__views__humans_only=False)["views"] != prints["views"]
    more_sets = changed(dimension_sets=[[], ["country"]])
    assert more_sets["views"] != prints["views"] and more_sets["carters"] != prints["carters"]
    assert changed(sketch_dimension_sets=[[]])["carters"] != prints["carters"]
    assert changed(sketch_dimension_sets=[[]])["views"] == prints["views"]  # additive rows keep every set
    assert base.fingerprints(12, 1)["carters"] != prints["carters"]  # HLL precision: unique metrics only
    assert base.fingerprints(12, 1)["views"] == prints["views"]
    assert set(base.fingerprints(14, 2).values()).isdisjoint(prints.values())  # the logic version: all


def test_project_vars_are_read_for_the_fingerprint_inputs() -> None:
    assert definition_vars() == (PROJECT_VARS["hll_precision"], PROJECT_VARS["metric_logic_version"])


def test_parse_reads_the_watermarks_column() -> None:
    assert definitions.parse("carts=ab12,events=cd34") == {"carts": "ab12", "events": "cd34"}
    assert definitions.parse(None) == {} and definitions.parse("") == {}


SETTINGS = Settings(_env_file=None)  # type: ignore[call-arg]
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC).timestamp()
MARKS = dict.fromkeys(("minute", "hour", "day"), NOW - 120)
CURRENT = get_catalogue().fingerprints(*definition_vars())


def _reconciled(days: int, built_by: str | None, metrics: list[str], stale: str = "events") -> tuple[Plan, list[str]]:
    """A day-grained query of the last `days` days, planned, with rollups holding `built_by` for metric `stale`."""
    catalogue = get_catalogue()
    start = datetime.fromtimestamp(NOW - days * 86400, UTC).strftime("%Y-%m-%d")
    request = QueryRequest.model_validate(
        {"metrics": metrics, "start": start, "end": "2026-12-05", "granularity": "day"}
    )
    query = validate("tenant_a", request, catalogue, SETTINGS)
    planned = plan(query, catalogue, MARKS, NOW, 7, 7200)
    recorded = {name: fp for name, fp in CURRENT.items() if name != stale}
    if built_by:
        recorded[stale] = built_by
    built: definitions.Built = {"minute": recorded, "hour": recorded, "day": recorded}
    return planned, definitions.reconcile(planned, query, catalogue, CURRENT, built, SETTINGS)


def test_rollups_of_another_definition_send_short_ranges_to_raw_events() -> None:
    planned, caveats = _reconciled(30, "0000000000000000", ["events", "purchases"])
    assert not caveats and planned.dimension_set is None and not planned.pieces
    assert planned.raw_reason and "events" in planned.raw_reason and "analytics dbt build" in planned.raw_reason
    assert "purchases" not in planned.raw_reason


def test_rollups_of_another_definition_over_long_ranges_answer_with_a_caveat_naming_metric_and_command() -> None:
    planned, caveats = _reconciled(200, None, ["events", "purchases", "conversion_rate"])
    assert planned.raw_reason is None and planned.pieces
    (caveat,) = caveats
    assert caveat.startswith("events: the day rollups") and "analytics dbt build" in caveat
    assert "the rollups hold day: none" in caveat


def test_a_ratio_of_a_stale_metric_is_named_with_it() -> None:
    _, caveats = _reconciled(200, "0000000000000000", ["events", "conversion_rate"], stale="purchasers")
    (caveat,) = caveats
    assert caveat.startswith("purchasers (and conversion_rate, which uses it): the day rollups")


def test_rollups_built_by_the_catalogue_definition_change_nothing() -> None:
    planned, caveats = _reconciled(200, CURRENT["events"], ["events", "conversion_rate"])
    assert planned.raw_reason is None and not caveats


def test_no_watermark_rows_means_nothing_to_reconcile() -> None:
    catalogue = get_catalogue()
    request = QueryRequest.model_validate({"metrics": ["events"], "start": "2026-11-01", "end": "2026-11-02"})
    query = validate("tenant_a", request, catalogue, SETTINGS)
    planned = plan(query, catalogue, MARKS, NOW, 7, 7200)
    assert definitions.reconcile(planned, query, catalogue, {"events": "x"}, None, SETTINGS) == []
    assert planned.raw_reason is None

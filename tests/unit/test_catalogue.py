"""The metric catalogue read from dbt_project.yml, the file the rollup models read too."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from analytics_core.catalogue import load_catalogue


def test_the_project_catalogue_loads_with_the_documented_metrics() -> None:
    catalogue = load_catalogue()
    assert {"events", "revenue", "purchases", "active_users", "conversion_rate"} <= set(catalogue.metrics)
    assert catalogue.metrics["revenue"].kind == "sum" and catalogue.metrics["revenue"].event_types == ("purchase",)
    assert catalogue.metrics["active_users"].approximate
    assert catalogue.metrics["traffic_events"].humans_only is False
    ratio = catalogue.metrics["conversion_rate"]
    assert (ratio.numerator, ratio.denominator) == ("purchasers", "active_users")
    assert catalogue.rollup_dimensions == ("event_type", "country", "device")
    assert () in catalogue.dimension_sets


def test_covering_set_picks_the_smallest_stored_set_or_none() -> None:
    catalogue = load_catalogue()
    assert catalogue.covering_set(set()) == ()
    assert catalogue.covering_set({"country"}) == ("country",)
    assert catalogue.covering_set({"country", "device"}) == ("event_type", "country", "device")
    assert catalogue.covering_set({"page"}) is None
    assert catalogue.covering_set({"country"}, unique=True) == ("country",)
    assert catalogue.covering_set({"country", "device"}, unique=True) is None  # no sketches that fine
    assert catalogue.dimension_set_name(("device", "event_type")) == "event_type,device"


def _write(tmp_path: Path, catalogue: dict) -> Path:
    path = tmp_path / "dbt_project.yml"
    path.write_text(yaml.safe_dump({"name": "x", "vars": {"metric_catalogue": catalogue}}))
    return path


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ({"dimension_sets": [["page"]]}, "not rolled up"),
        ({"metrics": {"r": {"kind": "ratio", "numerator": "nope", "denominator": "e"}}}, "ratio part 'nope'"),
        ({"metrics": {"s": {"kind": "sum"}}}, "needs `column`"),
        ({"metrics": {"e": {"kind": "median"}}}, "kind"),
        ({"sketch_dimension_sets": [["page"]]}, "not one of the dimension_sets"),
    ],
)
def test_an_inconsistent_catalogue_is_refused_naming_the_problem(tmp_path: Path, broken: dict, message: str) -> None:
    catalogue = {
        "dimensions": {"country": {"rollup": True}, "page": {"rollup": False}},
        "dimension_sets": [[], ["country"]],
        "metrics": {"e": {"kind": "count"}},
    }
    catalogue.update(broken)
    with pytest.raises(ValueError, match=message):
        load_catalogue(_write(tmp_path, catalogue))


def test_the_purchase_mapping_defaults_and_tenant_rules() -> None:
    from analytics_core.catalogue import PurchaseMapping

    project = load_catalogue().purchases
    assert project.event_types == ("purchase", "Order Completed")
    assert project.revenue_properties == ("revenue", "total")
    mapping = PurchaseMapping.model_validate(
        {"tenants": {"shop": {"event_types": ["checkout_done"], "revenue_properties": ["amount"]}, "half": {}}}
    )
    assert mapping.expand(("page_view", "purchase"), "other") == ("page_view", "purchase", "Order Completed")
    assert mapping.expand(("purchase", "checkout_done"), "shop") == ("checkout_done",)
    assert mapping.expand(("add_to_cart",), "shop") == ("add_to_cart",)
    assert (mapping.revenue_keys("shop"), mapping.revenue_keys("half")) == (("amount",), ("revenue", "total"))
    assert mapping.sql_types() == {
        "default": ["purchase", "Order Completed"],
        "tenants": {"half": ["purchase", "Order Completed"], "shop": ["checkout_done"]},
    }
    with pytest.raises(ValueError, match="event_types"):
        PurchaseMapping.model_validate({"event_types": []})


@pytest.mark.parametrize("tenants", [{}, {"shop": {"event_types": ["checkout_done", "purchase"]}}])
@pytest.mark.parametrize("types", [["purchase"], ["page_view", "purchase"], ["page_view"], ["Order Completed"]])
def test_the_sql_purchase_condition_matches_the_mapping_per_tenant(tenants: dict, types: list[str]) -> None:
    import duckdb

    from analytics_core.catalogue import PurchaseMapping
    from analytics_core.funnel_sql import Parameters, macros

    mapping = PurchaseMapping.model_validate({"tenants": tenants})
    names = ["purchase", "Order Completed", "checkout_done", "page_view", "it's"]
    rows = [(t, e) for t in ("shop", "other") for e in names]
    params = Parameters()
    condition = str(macros().event_type_in(types, params, mapping.sql_types()))
    prefilter = str(macros().event_types_bound(types, params, mapping.sql_types()))
    con = duckdb.connect()
    con.execute("CREATE TABLE e (tenant_id VARCHAR, event_type VARCHAR)")
    con.executemany("INSERT INTO e VALUES (?, ?)", rows)
    sql = f"SELECT tenant_id, event_type, {condition}, event_type IN ({prefilter}) FROM e ORDER BY ALL"
    for tenant, event_type, matched, kept in con.execute(sql, params.values).fetchall():
        expected = event_type in mapping.expand(tuple(types), tenant)
        assert matched is expected, (tenant, event_type)
        assert kept or not expected  # the prefilter keeps every event the condition can match

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

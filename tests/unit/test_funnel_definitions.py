"""Funnel and experiment definitions (analytics_core/funnels.py): the project's own, and the errors for bad ones."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from analytics_core.funnels import (
    MAX_WINDOW_S,
    DefinitionError,
    get_definitions,
    load_definitions,
    parse_definitions,
    parse_duration,
    table_hashes,
)

FILE = Path("dbt_project/dbt_project.yml")


def funnel(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "steps": [{"event_type": "page_view"}, {"event_type": "purchase"}],
        "window": "1d",
    }
    return {**body, **changes}


def experiment(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "variants": {"control": 0.5, "treatment": 0.5},
        "control": "control",
        "start": "2026-01-01T00:00:00Z",
        "primary": "bought",
        "metrics": {"bought": {"kind": "conversion", "event_type": "purchase", "within": "7d"}},
    }
    return {**body, **changes}


def error(raw: dict[str, Any]) -> str:
    with pytest.raises(DefinitionError) as caught:
        parse_definitions(raw, FILE)
    return str(caught.value)


def test_the_projects_definitions_load() -> None:
    defs = get_definitions()
    checkout = defs.funnels["checkout"]
    assert [s.event_type for s in checkout.steps] == ["page_view", "add_to_cart", "checkout", "purchase"]
    assert checkout.window == 86_400 and checkout.order == "ordered"
    button = defs.experiments["checkout_button"]
    assert button.control == "control" and set(button.variants) == {"control", "treatment"}
    assert button.metrics[button.primary].kind == "conversion"
    assert button.metrics["revenue_7d"].cuped and button.metrics["revenue_7d"].within == 7 * 86_400
    assert button.start.utcoffset() is not None


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("24h", 86_400), (" 7d ", 604_800), (3600, 3600), (493.0, 493)]
)
def test_durations(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0s", "91d", "1w", "1.5h", "", True, -5, 493.5, 0.0])
def test_bad_durations(text: str | int) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
    assert MAX_WINDOW_S == 90 * 86_400


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"funnels": {"f": funnel(steps=[{"event_type": "a"}])}},
            "funnels.f.steps: Tuple should have at least 2 items",
        ),
        ({"funnels": {"f": funnel(window="2w")}}, "funnels.f.window: '2w' is not a duration"),
        ({"funnels": {"f": funnel(order="random")}}, "funnels.f.order: Input should be 'ordered', 'strict' or 'any'"),
        (
            {"funnels": {"f": funnel(steps=[{"event_type": "a"}, {"event_type": ""}])}},
            "funnels.f.steps.1.event_type: String should have at least 1 character",
        ),
        (
            {"funnels": {"f": funnel(steps=[{"event_type": "a", "where": {"colour": "red"}}, {"event_type": "b"}])}},
            "funnels.f.steps.0.where: 'colour' is not a filterable field",
        ),
        (
            {"funnels": {"f": funnel(exclusions=[{"event_type": "x", "between": [2, 3]}])}},
            "funnels.f: exclusions.0.between: must be two step numbers 1 <= i < j <= 2",
        ),
        ({"funnels": {"f": funnel(hold_constant="product")}}, "funnels.f.hold_constant: 'product' is not"),
        ({"funnels": {"f": funnel(breakdowns=["city"])}}, "funnels.f.breakdowns: 'city' is not a breakdown"),
        (
            {"funnels": {"f": funnel(order="any", steps=[{"event_type": "a"}, {"event_type": "a"}])}},
            "must name different event types",
        ),
        ({"funnels": {"F-1": funnel()}}, "funnels.F-1: keys are lowercase letters"),
        ({"funnels": {"f": funnel(colour="red")}}, "funnels.f.colour: Extra inputs are not permitted"),
        ({"experiments": {"e": experiment(variants={"control": 1.0})}}, "experiments.e.variants: "),
        (
            {"experiments": {"e": experiment(variants={"control": 0.5, "treatment": 0.4})}},
            "the shares must add up to 1 (they add up to 0.9)",
        ),
        ({"experiments": {"e": experiment(control="baseline")}}, "control: 'baseline' is not one of the variants"),
        ({"experiments": {"e": experiment(primary="revenue")}}, "primary: 'revenue' is not one of the metrics"),
        ({"experiments": {"e": experiment(end="2025-12-01T00:00:00Z")}}, "end: must be after start"),
        (
            {
                "experiments": {
                    "e": experiment(metrics={"bought": {"kind": "continuous", "event_type": "p", "within": "7d"}})
                }
            },
            "experiments.e.metrics.bought: value: a continuous metric needs the column",
        ),
    ],
)
def test_errors_name_the_file_the_entry_and_the_rule(raw: dict[str, Any], expected: str) -> None:
    message = error(raw)
    assert message.startswith(f"{FILE}: "), message
    assert expected in message, message


def test_the_table_hash_is_the_md5_of_the_yaml_entry_as_dbt_computes_it(tmp_path: Path) -> None:
    """dbt's local_md5(tojson(entry, sort_keys=true)) is md5(json.dumps(entry, sort_keys=True)); key order
    in the YAML does not matter, any changed value does (tests/integration/test_funnels_dbt.py compares
    with the hash dbt stored)."""
    entry = funnel(title="x", steps=[{"event_type": "page_view"}, {"event_type": "checkout"}])
    path = tmp_path / "dbt_project.yml"
    path.write_text(yaml.safe_dump({"vars": {"funnels": {"f": entry}}}))
    first = table_hashes(path)["f"]
    assert first == hashlib.md5(json.dumps(entry, sort_keys=True).encode()).hexdigest()
    path.write_text(yaml.safe_dump({"vars": {"funnels": {"f": dict(reversed(list(entry.items())))}}}, sort_keys=False))
    assert table_hashes(path)["f"] == first
    path.write_text(yaml.safe_dump({"vars": {"funnels": {"f": {**entry, "window": "2d"}}}}))
    assert table_hashes(path)["f"] != first


def test_a_project_file_without_definitions_has_none(tmp_path: Path) -> None:
    path = tmp_path / "dbt_project.yml"
    path.write_text(yaml.safe_dump({"name": "x", "vars": {"metric_catalogue": {}}}))
    defs = load_definitions(path)
    assert defs.funnels == {} and defs.experiments == {}
    path.write_text(yaml.safe_dump({"vars": {"funnels": {"f": funnel(window="0s")}}}))
    with pytest.raises(DefinitionError, match=f"{path}: funnels.f.window: must be between"):
        load_definitions(path)


def test_a_purchase_step_puts_the_purchase_mapping_into_the_table_hash(tmp_path: Path) -> None:
    """A funnel with a `purchase` step is stamped with the mapping too (dbt's funnel_definitions adds it),
    so a changed mapping rebuilds its tables; a funnel without one is not."""
    entry = funnel(title="x", steps=[{"event_type": "page_view"}, {"event_type": "checkout"}])
    bought = {**entry, "steps": [*entry["steps"], {"event_type": "purchase"}]}
    path = tmp_path / "dbt_project.yml"

    def hashes(mapping: dict) -> dict[str, str]:
        catalogue = {"purchases": {"event_types": mapping}} if mapping else {}
        path.write_text(yaml.safe_dump({"vars": {"funnels": {"f": entry, "p": bought}, "metric_catalogue": catalogue}}))
        return table_hashes(path)

    default, own = hashes([]), hashes(["purchase", "checkout_done"])
    assert default["f"] == own["f"] == hashlib.md5(json.dumps(entry, sort_keys=True).encode()).hexdigest()
    with_mapping = {**bought, "purchases": {"default": ["purchase", "Order Completed"], "tenants": {}}}
    assert default["p"] == hashlib.md5(json.dumps(with_mapping, sort_keys=True).encode()).hexdigest()
    assert own["p"] != default["p"]

"""The metric catalogue: metrics and dimensions, read from the one YAML that dbt reads too.

It lives in dbt_project/dbt_project.yml under `vars: metric_catalogue`, so the rollup models and
the query API cannot disagree on what a metric means or which dimensions it can be cut by.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

DBT_PROJECT_FILE = Path(__file__).resolve().parent.parent / "dbt_project" / "dbt_project.yml"
Granularity = Literal["minute", "hour", "day"]
GRANULARITIES: tuple[Granularity, ...] = ("minute", "hour", "day")
ALL = "*"  # the value of a rollup's dimension column that is not in the row's dimension set
STORED_KINDS = ("count", "sum", "unique")  # kept in the rollups; ratios are computed at query time
# The event type that stands for "a purchase" in metrics, funnel steps and experiment metrics: each
# consumer reads it as the event types the tenant's purchase mapping lists (Catalogue.purchases).
PURCHASE = "purchase"
FINGERPRINT_LENGTH = 16  # hex digits of the md5 of a metric's definition


class Dimension(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    rollup: bool = False  # stored in the rollups; the others are served from raw events only


class Metric(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["count", "sum", "unique", "ratio"]
    description: str = ""
    humans_only: bool = True  # bots excluded (business metric) or included (traffic metric)
    event_types: tuple[str, ...] = ()  # only these event types count; empty = all
    column: str | None = None  # summed column (sum) or distinct key (unique)
    numerator: str | None = None  # ratio: metric names
    denominator: str | None = None

    @property
    def additive(self) -> bool:
        return self.kind in ("count", "sum")

    @property
    def approximate(self) -> bool:
        return self.kind == "unique"


class PurchaseRule(BaseModel):
    """A tenant's own purchase mapping; a field left out is the default's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_types: tuple[str, ...] | None = Field(default=None, min_length=1)
    revenue_properties: tuple[str, ...] | None = Field(default=None, min_length=1)


class PurchaseMapping(BaseModel):
    """Which event types are purchases and which property carries their revenue (the first one present).

    The collector fills the `revenue` column from `revenue_properties`; the rollups, the realtime layer,
    the query API, the funnels and the experiments count an event as `purchase` when its type is one of
    `event_types`. `tenants` holds the tenants that need another mapping.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_types: tuple[str, ...] = Field(default=(PURCHASE, "Order Completed"), min_length=1)
    revenue_properties: tuple[str, ...] = Field(default=("revenue", "total"), min_length=1)
    tenants: dict[str, PurchaseRule] = {}

    def purchase_types(self, tenant_id: str | None) -> tuple[str, ...]:
        """The event types that are purchases for this tenant (None: the default mapping's)."""
        rule = self.tenants.get(tenant_id) if tenant_id is not None else None
        return rule.event_types if rule is not None and rule.event_types is not None else self.event_types

    def revenue_keys(self, tenant_id: str | None) -> tuple[str, ...]:
        """The properties the collector reads revenue from for this tenant, in order."""
        rule = self.tenants.get(tenant_id) if tenant_id is not None else None
        if rule is not None and rule.revenue_properties is not None:
            return rule.revenue_properties
        return self.revenue_properties

    def expand(self, event_types: tuple[str, ...], tenant_id: str | None) -> tuple[str, ...]:
        """`event_types` with `purchase` replaced by the tenant's purchase event types."""
        if PURCHASE not in event_types:
            return event_types
        out: dict[str, None] = {}
        for name in event_types:
            for real in self.purchase_types(tenant_id) if name == PURCHASE else (name,):
                out[real] = None
        return tuple(out)

    def sql_types(self) -> dict[str, object]:
        """What the SQL macros read (`event_type_in` in dbt_project/macros/funnels.sql): the default event
        types and each tenant's own; dbt builds the same from the YAML (macro `purchase_types`)."""
        return {
            "default": list(self.event_types),
            "tenants": {t: list(self.purchase_types(t)) for t in sorted(self.tenants)},
        }


class Catalogue(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dimensions: dict[str, Dimension]
    dimension_sets: tuple[tuple[str, ...], ...] = Field(min_length=1)
    sketch_dimension_sets: tuple[tuple[str, ...], ...] = ()  # sets with unique-user sketches too
    metrics: dict[str, Metric]
    purchases: PurchaseMapping = PurchaseMapping()

    def metric_event_types(self, metric: Metric, tenant_id: str | None) -> tuple[str, ...]:
        """The event types the metric counts for this tenant (empty: all), `purchase` expanded."""
        return self.purchases.expand(metric.event_types, tenant_id)

    @model_validator(mode="after")
    def _consistent(self) -> Catalogue:
        rollup = set(self.rollup_dimensions)
        for dims in self.dimension_sets:
            if not set(dims) <= rollup:
                raise ValueError(f"dimension set {list(dims)} uses dimensions that are not rolled up")
        for dims in self.sketch_dimension_sets:
            if dims not in self.dimension_sets:
                raise ValueError(f"sketch dimension set {list(dims)} is not one of the dimension_sets")
        for name, metric in self.metrics.items():
            if metric.kind in ("sum", "unique") and not metric.column:
                raise ValueError(f"metric {name}: a {metric.kind} metric needs `column`")
            if metric.kind == "ratio":
                for part in (metric.numerator, metric.denominator):
                    if part not in self.metrics or self.metrics[part].kind == "ratio":
                        raise ValueError(f"metric {name}: ratio part {part!r} must be a non-ratio metric")
        return self

    @property
    def rollup_dimensions(self) -> tuple[str, ...]:
        return tuple(name for name, dim in self.dimensions.items() if dim.rollup)

    def dimension_set_name(self, dims: tuple[str, ...]) -> str:
        """The `dimension_set` value of rollup rows grouped by these dimensions (catalogue order)."""
        return ",".join(d for d in self.rollup_dimensions if d in dims)

    @property
    def stored_metrics(self) -> tuple[str, ...]:
        """The metrics kept in the rollups (count, sum, unique), in catalogue order."""
        return tuple(name for name, metric in self.metrics.items() if metric.kind in STORED_KINDS)

    def metric_definition(self, name: str, hll_precision: int, logic_version: int) -> str:
        """Everything that decides a stored metric's rollup numbers, as canonical JSON.

        The dbt macro `metric_definition` (dbt_project/macros/definitions.sql) builds the same text
        from the same YAML, so both sides hash it to the same fingerprint (a unit test checks this):
        the metric's kind, bot rule, event types (sorted) and column; the dimension sets its rows are
        kept for; for unique metrics the HyperLogLog precision; for metrics of `purchase` events the
        purchase mapping's event types (default and per tenant); and `metric_logic_version`, bumped
        when the staging or rollup SQL changes what metrics count. Descriptions are left out.
        """
        metric = self.metrics[name]
        if metric.kind not in STORED_KINDS:
            raise ValueError(f"metric {name}: a {metric.kind} metric is not stored in the rollups")
        sets = self.dimension_sets
        if metric.kind == "unique":
            sets = self.sketch_dimension_sets or self.dimension_sets
        body: dict[str, object] = {
            "metric": {
                "kind": metric.kind,
                "humans_only": metric.humans_only,
                "event_types": sorted(set(metric.event_types)),
                "column": metric.column if metric.kind in ("sum", "unique") else None,
            },
            "dimension_sets": [list(dims) for dims in sets],
            "logic_version": logic_version,
        }
        if metric.kind == "unique":
            body["hll_precision"] = hll_precision
        if PURCHASE in metric.event_types:
            body["purchases"] = self.purchases.sql_types()
        return json.dumps(body, sort_keys=True)

    def fingerprints(self, hll_precision: int, logic_version: int) -> dict[str, str]:
        """Stored metric → fingerprint of its definition (what fct_metric_definitions records per grain)."""
        return {
            name: fingerprint(self.metric_definition(name, hll_precision, logic_version))
            for name in self.stored_metrics
        }

    def covering_set(self, dims: set[str], unique: bool = False) -> tuple[str, ...] | None:
        """The smallest stored dimension set containing all of `dims`, or None (raw events only).

        Unique metrics are only stored for the sketch dimension sets (all sets when none are listed).
        """
        stored = (self.sketch_dimension_sets or self.dimension_sets) if unique else self.dimension_sets
        candidates = [s for s in stored if dims <= set(s)]
        return min(candidates, key=len) if candidates else None


def fingerprint(definition: str) -> str:
    """The short hash of a metric definition's canonical JSON (dbt: local_md5(...)[:16])."""
    return hashlib.md5(definition.encode(), usedforsecurity=False).hexdigest()[:FINGERPRINT_LENGTH]


def definition_vars(path: Path = DBT_PROJECT_FILE) -> tuple[int, int]:
    """The dbt vars besides the catalogue that enter every fingerprint: (hll_precision, metric_logic_version)."""
    project_vars = yaml.safe_load(path.read_text())["vars"]
    return int(project_vars["hll_precision"]), int(project_vars["metric_logic_version"])


def definition_fingerprints(catalogue: Catalogue, path: Path = DBT_PROJECT_FILE) -> dict[str, str]:
    """Stored metric → fingerprint of its definition in `catalogue`, with the project's other vars."""
    return catalogue.fingerprints(*definition_vars(path))


def load_catalogue(path: Path = DBT_PROJECT_FILE) -> Catalogue:
    """Parse and check the catalogue in a dbt_project.yml."""
    project = yaml.safe_load(path.read_text())
    try:
        raw = project["vars"]["metric_catalogue"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: vars.metric_catalogue is missing") from exc
    return Catalogue.model_validate(raw)


@lru_cache(maxsize=1)
def get_catalogue() -> Catalogue:
    """The project's catalogue, read once."""
    return load_catalogue()

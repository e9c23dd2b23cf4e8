"""The metric catalogue: metrics and dimensions, read from the one YAML that dbt reads too.

It lives in dbt_project/dbt_project.yml under `vars: metric_catalogue`, so the rollup models and
the query API cannot disagree on what a metric means or which dimensions it can be cut by.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

DBT_PROJECT_FILE = Path(__file__).resolve().parent.parent / "dbt_project" / "dbt_project.yml"
Granularity = Literal["minute", "hour", "day"]
GRANULARITIES: tuple[Granularity, ...] = ("minute", "hour", "day")
ALL = "*"  # the value of a rollup's dimension column that is not in the row's dimension set


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


class Catalogue(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dimensions: dict[str, Dimension]
    dimension_sets: tuple[tuple[str, ...], ...] = Field(min_length=1)
    sketch_dimension_sets: tuple[tuple[str, ...], ...] = ()  # sets with unique-user sketches too
    metrics: dict[str, Metric]

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

    def covering_set(self, dims: set[str], unique: bool = False) -> tuple[str, ...] | None:
        """The smallest stored dimension set containing all of `dims`, or None (raw events only).

        Unique metrics are only stored for the sketch dimension sets (all sets when none are listed).
        """
        stored = (self.sketch_dimension_sets or self.dimension_sets) if unique else self.dimension_sets
        candidates = [s for s in stored if dims <= set(s)]
        return min(candidates, key=len) if candidates else None


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

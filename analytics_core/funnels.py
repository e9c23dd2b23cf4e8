"""Funnel and experiment definitions: read from dbt_project.yml (`vars: funnels`, `vars: experiments`).

They sit beside the metric catalogue in the one YAML that dbt reads too, so the dbt models that
build a funnel's daily table or an experiment's significance table and the query API that answers
ad-hoc funnels cannot disagree on what a definition means. Every definition is checked when it is
loaded; a mistake is reported with the file, the entry and the rule it breaks, e.g.
`dbt_project/dbt_project.yml: funnels.checkout.steps.1.event_type: String should have at least 1 character`.

A changed definition never mixes with rows of the old one: fct_funnel_daily (and fct_funnel_entries,
which it aggregates) stamps its rows with the md5 of the funnel's YAML entry (table_hashes), rebuilds
a funnel whose entry changed, and the API
serves the table only while every row carries the current hash; the experiment tables are rebuilt
whole each hour.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from analytics_core.catalogue import DBT_PROJECT_FILE, PURCHASE, PurchaseMapping

KEY = re.compile(r"^[a-z][a-z0-9_]{0,62}$")  # funnel, experiment, metric and variant keys
PROPERTY = re.compile(r"^properties\.[A-Za-z_][A-Za-z0-9_]{0,62}$")
# Columns of the staged events a step may filter on or hold constant, besides `properties.<key>`.
COLUMNS = ("page", "country", "device", "library", "currency", "experiment_variant")
BREAKDOWNS = ("country", "device", "page", "library")
MAX_STEPS = 10
MAX_WINDOW_S = 90 * 86_400
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")


def parse_duration(value: object) -> int:
    """Seconds of a duration written `90s`, `30m`, `24h` or `7d` (an integer is seconds)."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30m, 24h or 7d")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, float) and value.is_integer():  # JSON's 600.0 is an integer to a JSON Schema too
        seconds = int(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration such as 30m, 24h or 7d")
        seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if not 1 <= seconds <= MAX_WINDOW_S:
        raise ValueError(f"must be between 1 second and {MAX_WINDOW_S // 86_400} days")
    return seconds


def check_field(name: str) -> str:
    """A column of the staged events a filter may use, or `properties.<key>`."""
    if name in COLUMNS or PROPERTY.match(name):
        return name
    raise ValueError(f"{name!r} is not a filterable field (one of {', '.join(COLUMNS)}, or properties.<key>)")


def check_where(where: dict[str, Any]) -> dict[str, Any]:
    """A `where` mapping whose every field check_field accepts."""
    for name in where:
        check_field(name)
    return where


def _values(value: object) -> tuple[str, ...]:
    items = value if isinstance(value, list | tuple) else [value]
    if not items:
        raise ValueError("needs at least one value")
    out = []
    for item in items:
        if item is None or isinstance(item, dict | list | bool):
            raise ValueError("values are strings or numbers")
        out.append(str(item))
    return tuple(out)


# The JSON Schemas state what the validators check, so the query API's OpenAPI document (where an
# ad-hoc funnel is a request body) says the real rules; the validators keep the plain-words errors.
_SCALAR: dict[str, Any] = {"anyOf": [{"type": "string"}, {"type": "number"}]}
_VALUES: dict[str, Any] = {"anyOf": [*_SCALAR["anyOf"], {"type": "array", "items": _SCALAR, "minItems": 1}]}
Values = Annotated[tuple[str, ...], BeforeValidator(_values), WithJsonSchema(_VALUES)]
Seconds = Annotated[
    int,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_WINDOW_S,
            "description": "Seconds; the YAML also takes a duration such as 30m, 24h or 7d.",
        }
    ),
]
_FIELD_PATTERN = rf"^({'|'.join(COLUMNS)}|properties\.[A-Za-z_][A-Za-z0-9_]{{0,62}})$"
HeldField = Annotated[
    str | None, WithJsonSchema({"anyOf": [{"type": "string", "pattern": _FIELD_PATTERN}, {"type": "null"}]})
]
Breakdowns = Annotated[
    tuple[str, ...],
    WithJsonSchema({"type": "array", "items": {"enum": list(BREAKDOWNS)}, "uniqueItems": True}),
]
Where = Annotated[
    dict[str, Values],
    AfterValidator(check_where),
    WithJsonSchema({"type": "object", "propertyNames": {"pattern": _FIELD_PATTERN}, "additionalProperties": _VALUES}),
]


class Step(BaseModel):
    """An event type, and optionally values its fields must have (`where: {page: /checkout}`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_type: str = Field(min_length=1, max_length=200)
    where: Where = {}
    title: str = ""

    @property
    def label(self) -> str:
        return self.title or self.event_type

    def canonical(self) -> dict[str, Any]:
        return {"event_type": self.event_type, "where": {k: sorted(v) for k, v in sorted(self.where.items())}}


class Exclusion(Step):
    """A user who does this between steps `between[0]` and `between[1]` (1-based) leaves the funnel."""

    between: tuple[int, int] | None = None  # None: between the first and the last step

    def canonical(self) -> dict[str, Any]:
        return {**super().canonical(), "between": list(self.between) if self.between else None}


class Funnel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = ""
    description: str = ""
    steps: tuple[Step, ...] = Field(min_length=2, max_length=MAX_STEPS)
    window: Seconds  # the conversion window, counted from the first step; an event exactly at its end counts
    order: Literal["ordered", "strict", "any"] = "ordered"
    exclusions: tuple[Exclusion, ...] = ()
    hold_constant: HeldField = None  # a field every step's event must share with the first step's
    breakdowns: Breakdowns = ()  # dimensions the daily table is broken down by (first step's value)

    @field_validator("hold_constant")
    @classmethod
    def _hold(cls, name: str | None) -> str | None:
        return None if name is None else check_field(name)

    @field_validator("breakdowns")
    @classmethod
    def _breakdowns(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            if name not in BREAKDOWNS:
                raise ValueError(f"{name!r} is not a breakdown dimension (one of {', '.join(BREAKDOWNS)})")
        if len(set(names)) != len(names):
            raise ValueError("a breakdown is listed twice")
        return names

    @model_validator(mode="after")
    def _consistent(self) -> Funnel:
        n = len(self.steps)
        for i, exclusion in enumerate(self.exclusions):
            if exclusion.between is not None:
                first, last = exclusion.between
                if not 1 <= first < last <= n:
                    raise ValueError(f"exclusions.{i}.between: must be two step numbers 1 <= i < j <= {n}")
        if self.order == "any":
            # In any order one event could otherwise satisfy two steps at once.
            types = [s.event_type for s in self.steps]
            if len(set(types)) != len(types):
                raise ValueError("steps: an `any`-order funnel's steps must name different event types")
        return self

    def exclusion_span(self, exclusion: Exclusion) -> tuple[int, int]:
        return exclusion.between or (1, len(self.steps))


class ExperimentMetric(BaseModel):
    """`conversion`: did the user do the event within `within` of first exposure (0/1).
    `continuous`: the sum of `value` over those events per user (0 when none), e.g. revenue per user.
    `cuped`: adjust by the same metric over the same span before exposure (CUPED)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["conversion", "continuous"]
    event_type: str = Field(min_length=1, max_length=200)
    where: Where = {}
    value: Literal["revenue"] | None = None
    within: Seconds
    cuped: bool = False
    higher_is_better: bool = True
    title: str = ""

    @model_validator(mode="after")
    def _value(self) -> ExperimentMetric:
        if self.kind == "continuous" and self.value is None:
            raise ValueError("value: a continuous metric needs the column it sums (revenue)")
        if self.kind == "conversion" and self.value is not None:
            raise ValueError("value: a conversion metric counts users, it sums no column")
        return self


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = ""
    description: str = ""
    variants: dict[str, float]  # planned share of users per variant
    control: str
    start: datetime
    end: datetime | None = None  # None: still running
    primary: str  # the metric the verdict is about
    metrics: dict[str, ExperimentMetric] = Field(min_length=1)
    sequential: bool = False  # always-valid p-values, so the results may be looked at every day
    alpha: float = Field(default=0.05, gt=0, lt=0.5)

    @field_validator("variants")
    @classmethod
    def _split(cls, variants: dict[str, float]) -> dict[str, float]:
        if len(variants) < 2:
            raise ValueError("an experiment needs at least two variants")
        for name, share in variants.items():
            if not KEY.match(name):
                raise ValueError(f"variant {name!r}: lowercase letters, digits and _ only")
            if not 0 < share < 1:
                raise ValueError(f"variant {name!r}: its share must be between 0 and 1")
        if abs(sum(variants.values()) - 1) > 1e-9:
            raise ValueError(f"the shares must add up to 1 (they add up to {sum(variants.values()):g})")
        return variants

    @field_validator("start", "end")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        if self.control not in self.variants:
            raise ValueError(f"control: {self.control!r} is not one of the variants")
        if self.primary not in self.metrics:
            raise ValueError(f"primary: {self.primary!r} is not one of the metrics")
        for name in self.metrics:
            if not KEY.match(name):
                raise ValueError(f"metrics.{name}: lowercase letters, digits and _ only")
        if self.end is not None and self.end <= self.start:
            raise ValueError("end: must be after start")
        return self


class Definitions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    funnels: dict[str, Funnel] = {}
    experiments: dict[str, Experiment] = {}

    @model_validator(mode="after")
    def _keys(self) -> Definitions:
        for kind, entries in (("funnels", self.funnels), ("experiments", self.experiments)):
            for key in entries:
                if not KEY.match(key):
                    raise ValueError(f"{kind}.{key}: keys are lowercase letters, digits and _ (at most 63)")
        return self


class DefinitionError(ValueError):
    """A funnel or experiment definition breaks a rule: the message names the file, the entry and the rule."""


def _explain(exc: ValidationError, path: Path) -> DefinitionError:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{path}: {where}: {message}" if where else f"{path}: {message}")
    return DefinitionError("\n".join(lines))


def parse_definitions(raw: dict[str, Any], path: Path = DBT_PROJECT_FILE) -> Definitions:
    """Check `{"funnels": ..., "experiments": ...}`; DefinitionError names what is wrong and where."""
    try:
        return Definitions.model_validate(raw)
    except ValidationError as exc:
        raise _explain(exc, path) from None


def load_definitions(path: Path = DBT_PROJECT_FILE) -> Definitions:
    """The funnels and experiments of a dbt_project.yml (`vars: funnels`, `vars: experiments`)."""
    project_vars = (yaml.safe_load(path.read_text()) or {}).get("vars") or {}
    raw = {"funnels": project_vars.get("funnels") or {}, "experiments": project_vars.get("experiments") or {}}
    return parse_definitions(raw, path)


def with_purchases(entry: dict[str, Any], purchases: PurchaseMapping) -> dict[str, Any]:
    """A funnel entry as the SQL macros read it: with the purchase mapping's event types under `purchases`
    when a step or exclusion is `purchase` (dbt's macro funnel_definitions adds the same)."""
    parts = [*(entry.get("steps") or []), *(entry.get("exclusions") or [])]
    if any(isinstance(p, dict) and str(p.get("event_type")) == PURCHASE for p in parts) and "purchases" not in entry:
        return {**entry, "purchases": purchases.sql_types()}
    return entry


def table_hashes(path: Path = DBT_PROJECT_FILE) -> dict[str, str]:
    """Funnel key -> the `definition_hash` fct_funnel_daily stamps on the rows its definition built.

    dbt computes it as local_md5(tojson(entry, sort_keys=true)) from the YAML entry as written (dbt's
    tojson is json.dumps), with the purchase mapping added when the funnel has a `purchase` step
    (with_purchases): rows stamped otherwise were built by another definition.
    """
    project_vars = (yaml.safe_load(path.read_text()) or {}).get("vars") or {}
    raw = project_vars.get("funnels") or {}
    purchases = PurchaseMapping.model_validate((project_vars.get("metric_catalogue") or {}).get("purchases") or {})
    return {
        key: hashlib.md5(
            json.dumps(with_purchases(entry, purchases), sort_keys=True).encode(), usedforsecurity=False
        ).hexdigest()
        for key, entry in raw.items()
    }


@lru_cache(maxsize=1)
def get_table_hashes() -> dict[str, str]:
    """The project's table_hashes(), read once."""
    return table_hashes()


@lru_cache(maxsize=1)
def get_definitions() -> Definitions:
    """The project's funnels and experiments, read once."""
    return load_definitions()

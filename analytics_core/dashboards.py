"""Dashboard definitions: versioned YAML files in dashboards/, one dashboard a file, checked when loaded.

A dashboard is a default range and time zone and its tiles; a tile names what it shows by the names the
rest of the project defines: catalogue metrics and dimensions (analytics_core/catalogue.py), funnels and
experiments (analytics_core/funnels.py). A file that names anything else, or breaks a rule, is refused
with the file, the field and the rule, e.g.
`dashboards/demo.yml: tiles.2.metric: unknown metric 'revenu'; known: events, ... (rule: catalogue_metric)`.
docs/DASHBOARDS.md describes the format; the query API serves them (api/routes/dashboards.py).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import available_timezones

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from analytics_core.catalogue import Catalogue, get_catalogue
from analytics_core.funnels import KEY, Definitions, get_definitions

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS_DIR = ROOT / "dashboards"
Unit = Literal["minute", "hour", "day", "month"]
# Relative ranges: (unit, count): `count` whole units in the dashboard's time zone, the current one last.
RELATIVE_RANGES: dict[str, tuple[Unit, int]] = {
    "last_1h": ("minute", 60),
    "last_24h": ("hour", 24),
    "today": ("day", 1),
    "last_7d": ("day", 7),
    "last_30d": ("day", 30),
    "this_month": ("month", 1),
    "last_12m": ("month", 12),
}
MAX_TILES = 24  # what one load may compute: a number tile is two queries, so at most 48 reads
MAX_TILE_METRICS = 5
MAX_TILE_FILTERS = 10
KINDS = ("series", "number", "breakdown", "funnel", "experiment", "live")
Key = Annotated[str, Field(pattern=KEY.pattern)]


def _names(info: ValidationInfo) -> tuple[Catalogue, Definitions]:
    """The catalogue and the funnel and experiment definitions names are checked against (the project's by default)."""
    context = info.context or {}
    return context.get("catalogue") or get_catalogue(), context.get("definitions") or get_definitions()


def _metric(name: str, info: ValidationInfo) -> str:
    catalogue = _names(info)[0]
    if name not in catalogue.metrics:
        known = ", ".join(catalogue.metrics)
        raise PydanticCustomError(
            "catalogue_metric", "unknown metric {name}; known: {known}", {"name": repr(name), "known": known}
        )
    return name


def _dimension(name: str, info: ValidationInfo) -> str:
    catalogue = _names(info)[0]
    if name not in catalogue.dimensions:
        known = ", ".join(catalogue.dimensions)
        raise PydanticCustomError(
            "catalogue_dimension", "unknown dimension {name}; known: {known}", {"name": repr(name), "known": known}
        )
    return name


def _distinct(names: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(names)) != len(names):
        raise PydanticCustomError("unique", "a name is listed twice")
    return names


# Names checked against the catalogue where a field is declared (the error names the field and the rule).
MetricName = Annotated[str, AfterValidator(_metric)]
DimensionName = Annotated[str, AfterValidator(_dimension)]
MetricNames = Annotated[tuple[MetricName, ...], AfterValidator(_distinct)]


class TileFilter(BaseModel):
    """A dimension filter a tile always applies, as in a query: `{dimension: device, op: in, values: [mobile]}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dimension: DimensionName
    op: Literal["eq", "in", "not_in"] = "eq"
    values: tuple[str, ...] = Field(min_length=1, max_length=100)

    @model_validator(mode="after")
    def _one_value(self) -> TileFilter:
        if self.op == "eq" and len(self.values) != 1:
            raise PydanticCustomError("eq_one_value", "values: op eq takes exactly one value")
        return self


class _Tile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Key
    title: str = ""
    description: str = ""
    width: int = Field(default=6, ge=1, le=12, description="Layout hint: columns of a 12-column grid.")


class _MetricTile(_Tile):
    filters: tuple[TileFilter, ...] = Field(default=(), max_length=MAX_TILE_FILTERS)


class SeriesTile(_MetricTile):
    """Metrics over time: buckets of `granularity` in the dashboard's zone, optionally stacked by a dimension."""

    kind: Literal["series"]
    metrics: MetricNames = Field(min_length=1, max_length=MAX_TILE_METRICS)
    stack_by: DimensionName | None = None  # the query's group_by
    top: int | None = Field(default=None, ge=1, le=50)  # with stack_by: the N largest groups, the rest as one
    granularity: Literal["auto", "minute", "hour", "day"] = "auto"  # auto: the query API's rule, over the range

    @model_validator(mode="after")
    def _top(self) -> SeriesTile:
        if self.top is not None and self.stack_by is None:
            raise PydanticCustomError("needs_stack_by", "top: ranks the stacked groups, give stack_by too")
        return self


class NumberTile(_MetricTile):
    """One number over the range, and its change against the previous period of the same length."""

    kind: Literal["number"]
    metric: MetricName
    compare: Literal["previous_period", "none"] = "previous_period"


class BreakdownTile(_MetricTile):
    """A metric over the range by a dimension: the `top` largest values, the others added up as one."""

    kind: Literal["breakdown"]
    metric: MetricName
    dimension: DimensionName
    top: int = Field(default=10, ge=1, le=100)


class FunnelTile(_Tile):
    """A defined funnel (dbt_project.yml `vars: funnels`) per cohort day, optionally by one of its breakdowns."""

    kind: Literal["funnel"]
    funnel: str
    breakdown: str | None = None

    @model_validator(mode="after")
    def _defined(self, info: ValidationInfo) -> FunnelTile:
        defined = _names(info)[1].funnels
        funnel = defined.get(self.funnel)
        if funnel is None:
            known = ", ".join(defined) or "none"
            raise PydanticCustomError(
                "defined_funnel",
                "funnel: no funnel {name} is defined; known: {known}",
                {"name": repr(self.funnel), "known": known},
            )
        if self.breakdown is not None and self.breakdown not in funnel.breakdowns:
            raise PydanticCustomError(
                "funnel_breakdown",
                "breakdown: {name} is not one of the funnel's breakdowns ({known}), which its daily table keeps",
                {"name": repr(self.breakdown), "known": ", ".join(funnel.breakdowns) or "none"},
            )
        return self


class ExperimentTile(_Tile):
    """A defined experiment's results (over the experiment's own span: the range and filters do not apply)."""

    kind: Literal["experiment"]
    experiment: str

    @model_validator(mode="after")
    def _defined(self, info: ValidationInfo) -> ExperimentTile:
        defined = _names(info)[1].experiments
        if self.experiment not in defined:
            known = ", ".join(defined) or "none"
            raise PydanticCustomError(
                "defined_experiment",
                "experiment: no experiment {name} is defined; known: {known}",
                {"name": repr(self.experiment), "known": known},
            )
        return self


class LiveTile(_Tile):
    """Live totals over the realtime layer's window, which the page then follows on GET /api/v1/live."""

    kind: Literal["live"]
    metrics: MetricNames = Field(min_length=1, max_length=MAX_TILE_METRICS * 2)


Tile = Annotated[
    SeriesTile | NumberTile | BreakdownTile | FunnelTile | ExperimentTile | LiveTile, Field(discriminator="kind")
]
MetricTile = SeriesTile | NumberTile | BreakdownTile


class Dashboard(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Key
    version: int = Field(ge=1, description="Bumped by hand when the dashboard changes meaning.")
    title: str = Field(min_length=1, max_length=200)
    description: str = ""
    range: str = "last_7d"
    timezone: str = "UTC"
    tiles: tuple[Tile, ...] = Field(min_length=1, max_length=MAX_TILES)

    @field_validator("range")
    @classmethod
    def _relative(cls, value: str) -> str:
        if value not in RELATIVE_RANGES:
            raise PydanticCustomError(
                "relative_range",
                "{value} is not a relative range; one of {known}",
                {"value": repr(value), "known": ", ".join(RELATIVE_RANGES)},
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if value not in _zones():
            raise PydanticCustomError(
                "iana_zone", "{value} is not an IANA time zone (e.g. Europe/Berlin)", {"value": repr(value)}
            )
        return value

    @field_validator("tiles")
    @classmethod
    def _unique_ids(cls, tiles: tuple[Any, ...]) -> tuple[Any, ...]:
        seen: set[str] = set()
        for tile in tiles:
            if tile.id in seen:
                raise PydanticCustomError("unique", "tile id {id} is used twice", {"id": repr(tile.id)})
            seen.add(tile.id)
        return tiles

    @property
    def definition_hash(self) -> str:
        """A short hash of the definition as loaded: answers computed under another one are other answers."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


class DashboardError(ValueError):
    """A dashboard file breaks a rule: each line names the file, the field and the rule."""


def _explain(exc: ValidationError, path: Path) -> list[str]:
    lines = []
    for error in exc.errors():
        loc = list(error["loc"])
        if len(loc) > 2 and loc[0] == "tiles" and loc[2] in KINDS:  # the union's tag: tiles.3.number.metric
            del loc[2]
        where = ".".join(str(part) for part in loc)
        message = f"{where}: {error['msg']}" if where else str(error["msg"])
        lines.append(f"{_shown(path)}: {message} (rule: {error['type']})")
    return lines


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def parse_dashboard(
    raw: Any, path: Path, catalogue: Catalogue | None = None, definitions: Definitions | None = None
) -> Dashboard:
    """A dashboard from a file's YAML; DashboardError naming the file, each field at fault and its rule."""
    if not isinstance(raw, dict):
        raise DashboardError(
            f"{_shown(path)}: a dashboard is a mapping of id, version, title, tiles ... (rule: mapping)"
        )
    context = {"catalogue": catalogue, "definitions": definitions}
    try:
        board = Dashboard.model_validate(raw, context=context)
    except ValidationError as exc:
        raise DashboardError("\n".join(_explain(exc, path))) from None
    if board.id != path.stem:
        raise DashboardError(
            f"{_shown(path)}: id: {board.id!r} must be the file's name ({path.stem}) (rule: file_name)"
        )
    return board


def load_dashboards(
    folder: Path = DASHBOARDS_DIR, catalogue: Catalogue | None = None, definitions: Definitions | None = None
) -> dict[str, Dashboard]:
    """Every `<id>.yml` of the folder, checked; DashboardError listing every file's mistakes."""
    boards: dict[str, Dashboard] = {}
    problems: list[str] = []
    for path in sorted(folder.glob("*.yml")):
        try:
            boards[path.stem] = parse_dashboard(yaml.safe_load(path.read_text()), path, catalogue, definitions)
        except DashboardError as exc:
            problems.append(str(exc))
        except yaml.YAMLError as exc:
            problems.append(f"{_shown(path)}: not YAML: {exc} (rule: yaml)")
    if problems:
        raise DashboardError("\n".join(problems))
    return boards


@lru_cache(maxsize=1)
def get_dashboards() -> dict[str, Dashboard]:
    """The project's dashboards, read once."""
    return load_dashboards()

"""Funnel SQL for the query API, rendered from the dbt macros in dbt_project/macros/funnels.sql.

The funnel engine is written once, as Jinja macros, so the dbt models that build a funnel's daily
table and the API that answers ad-hoc funnels over the raw events cannot count differently. The
macros use plain Jinja only (dbt's `{% macro %}` is plain Jinja), so jinja2 renders the file here
without dbt. What differs is how values reach the SQL: here every value of the definition (and the
time range) becomes a named DuckDB parameter (`$p1`, ...) passed to `execute(sql, params)`, never
text pasted into the statement; dbt binds quoted literals instead. docs/FUNNELS.md has the semantics.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from analytics_core.catalogue import DBT_PROJECT_FILE, get_catalogue
from analytics_core.funnels import BREAKDOWNS, Funnel, with_purchases

MACROS_FILE = DBT_PROJECT_FILE.parent / "macros" / "funnels.sql"
Dialect = Literal["duckdb", "bigquery"]


@lru_cache(maxsize=1)
def macros() -> Any:
    """The macros of funnels.sql, callable from Python (a jinja2 template module)."""
    # Sandboxed like dbt's own environment, so a macro that works here works in dbt too.
    env = SandboxedEnvironment(extensions=["jinja2.ext.do"], undefined=StrictUndefined, autoescape=False)
    return env.from_string(MACROS_FILE.read_text()).module


class Parameters:
    """`bind` for the macros: records each value as a named parameter and returns its placeholder."""

    def __init__(self, dialect: Dialect = "duckdb") -> None:
        self.values: dict[str, str] = {}
        self._prefix = "@" if dialect == "bigquery" else "$"

    def __call__(self, value: object) -> str:
        name = f"p{len(self.values) + 1}"
        self.values[name] = str(value)
        return f"{self._prefix}{name}"

    def timestamp(self, value: datetime, dialect: Dialect) -> str:
        """A UTC timestamp parameter (naive datetimes are taken as UTC)."""
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        placeholder = self(value.astimezone(UTC).isoformat())
        return f"cast({placeholder} as {'timestamp' if dialect == 'bigquery' else 'timestamptz'})"


def _render(
    macro: str,
    funnel: Funnel,
    events: str,
    start: datetime,
    end: datetime,
    as_of: datetime,
    dialect: Dialect,
    group_by: Sequence[str] | None,
    **options: Any,
) -> tuple[str, dict[str, str]]:
    columns = list(funnel.breakdowns if group_by is None else group_by)
    for column in columns:
        if column not in BREAKDOWNS:
            raise ValueError(f"{column!r} is not a breakdown dimension (one of {', '.join(BREAKDOWNS)})")
    if end <= start:
        raise ValueError("the funnel's range is empty: end must be after start")
    params = Parameters(dialect)
    times = [params.timestamp(value, dialect) for value in (start, end, as_of)]
    definition = with_purchases(funnel.model_dump(mode="json"), get_catalogue().purchases)
    sql = getattr(macros(), macro)(events, definition, *times, params, dialect=dialect, breakdowns=columns, **options)
    return str(sql), params.values


def render(
    funnel: Funnel,
    events: str,
    start: datetime,
    end: datetime,
    as_of: datetime,
    dialect: Dialect = "duckdb",
    group_by: Sequence[str] | None = None,
    by_day: bool = True,
) -> tuple[str, dict[str, str]]:
    """The funnel's summary per tenant, cohort day (unless by_day is false) and `group_by` columns.

    `events`: a table or parenthesised subquery shaped like stg_tracking__events; [start, end) bounds
    the first steps; `as_of` is the data's time (users whose window is still open are pending);
    `group_by` defaults to the funnel's breakdowns. Returns the SQL and its named parameters.
    """
    return _render("funnel_summary", funnel, events, start, end, as_of, dialect, group_by, by_day=by_day)


def render_entries(
    funnel: Funnel,
    events: str,
    start: datetime,
    end: datetime,
    as_of: datetime,
    dialect: Dialect = "duckdb",
    group_by: Sequence[str] | None = None,
) -> tuple[str, dict[str, str]]:
    """One row per tenant, cohort day and user: the counted attempt's steps and status (see render)."""
    return _render("funnel_entries", funnel, events, start, end, as_of, dialect, group_by)

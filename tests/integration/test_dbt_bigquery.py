"""The dbt project compiles for BigQuery, first build and incremental, and all of its SQL parses as BigQuery SQL.

BigQuery itself is unreachable here: tests/dbt_bigquery.py runs dbt with a shim (see its docstring).
sqlglot parsing catches syntax BigQuery cannot read; it is lenient about some DuckDB-isms (`::`
casts, unknown functions), so this is a floor, not a dry run against BigQuery.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.dbt_bigquery import DBT_PROJECT, MODES, Compiled, Failure, compile_projects, parse_failures

INCREMENTAL = """
{{ config(materialized='incremental', unique_key='event_id', incremental_strategy='merge') }}
select event_id, tenant_id, timestamp as event_at from {{ source('tracking', 'raw_events') }}
{% if is_incremental() %}
where timestamp > (select max(event_at) from {{ this }})
{% endif %}
"""
SOURCES = """
version: 2
sources:
  - name: tracking
    schema: main
    tables: [{name: raw_events}]
"""


def harness_project(root: Path) -> Path:
    """A throwaway project: one incremental model, and one that dbt compiles but BigQuery cannot parse."""
    (root / "models").mkdir(parents=True)
    shutil.copy(DBT_PROJECT / "profiles.yml", root / "profiles.yml")
    (root / "dbt_project.yml").write_text("name: harness\nconfig-version: 2\nprofile: analytics\n")
    (root / "models" / "sources.yml").write_text(SOURCES)
    (root / "models" / "events_inc.sql").write_text(INCREMENTAL)
    (root / "models" / "broken.sql").write_text(
        "select event_id tenant_id event_type from {{ source('tracking', 'raw_events') }}"
    )
    return root


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> list[Compiled]:
    """The real project, then the harness project, in one child process (importing dbt takes seconds)."""
    return compile_projects([DBT_PROJECT, harness_project(tmp_path_factory.mktemp("harness"))])


def report(failures: list[Failure]) -> str:
    return f"{len(failures)} failure(s):\n\n" + "\n\n".join(map(str, failures))


def test_every_model_compiles_and_builds_for_bigquery(compiled: list[Compiled]) -> None:
    project = compiled[0]
    assert project.models
    if project.dbt_errors:
        pytest.fail(report(project.dbt_errors))


def test_every_statement_parses_as_bigquery_sql(compiled: list[Compiled]) -> None:
    failures = parse_failures(compiled[0])
    if failures:
        pytest.fail(report(failures))


def test_the_harness_sees_both_branches_and_reports_what_does_not_parse(compiled: list[Compiled]) -> None:
    """The shim itself: a dbt upgrade that broke it (say, is_incremental() never true) shows up here."""
    harness = compiled[1]
    assert harness.models == ["broken", "events_inc"] and harness.dbt_errors == []
    this = "`offline-check-project`.`analytics`.`events_inc`"
    first_select, *first_sent = harness.statements["first_build"]["events_inc"]
    assert this not in first_select
    (create,) = first_sent
    assert f"create or replace table {this}" in " ".join(create.split())
    incremental_select, *incremental_sent = harness.statements["incremental"]["events_inc"]
    assert f"(select max(event_at) from {this})" in incremental_select
    (merge,) = incremental_sent
    assert f"merge into {this}" in merge
    # The MERGE lists the existing table's columns, inferred offline from the model's SQL.
    assert "(`event_id`, `tenant_id`, `event_at`)" in merge
    failures = parse_failures(harness)
    assert {(f.mode, f.model) for f in failures} == {(mode, "broken") for mode in MODES}
    assert all("sqlglot" in f.error for f in failures)

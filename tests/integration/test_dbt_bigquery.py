"""The dbt project compiles for BigQuery, first build and incremental, and all of its SQL parses as BigQuery SQL.

BigQuery itself is unreachable here: tests/dbt_bigquery.py runs dbt with a shim (see its docstring).
sqlglot parsing catches syntax BigQuery cannot read; it is lenient about some DuckDB-isms (`::`
casts, unknown functions), so this is a floor, not a dry run against BigQuery.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import fields
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

from analytics_core.stats import bundle
from analytics_core.stats.duckdb_udf import ROW_STRUCTURE
from analytics_core.stats.experiments import Row
from tests.dbt_bigquery import (
    DBT_PROJECT,
    MODES,
    Compiled,
    Failure,
    compile_projects,
    function_body,
    parse_failures,
    python_function_error,
)

# The significance table's columns, in order, on both warehouses (test_experiments_dbt.py checks DuckDB's).
SIGNIFICANCE_COLUMNS = ["tenant_id", "experiment_key", "is_primary", *(f.name for f in fields(Row)), "_built_at"]
BIGQUERY_TYPES = {"VARCHAR": "STRING", "BIGINT": "INT64", "DOUBLE": "FLOAT64", "BOOLEAN": "BOOL"}  # DuckDB's

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

UDFS = """
functions:
  - name: broken_body
    config: {runtime_version: "3.11", entry_point: main}
    arguments: [{name: x, data_type: STRING}]
    returns: {data_type: STRING}
  - name: wrong_entry
    config: {runtime_version: "3.11", entry_point: main}
    arguments: [{name: x, data_type: STRING}]
    returns: {data_type: STRING}
"""


def harness_project(root: Path) -> Path:
    """A throwaway project: an incremental model, and a model and two functions BigQuery could not take."""
    (root / "models").mkdir(parents=True)
    shutil.copy(DBT_PROJECT / "profiles.yml", root / "profiles.yml")
    (root / "dbt_project.yml").write_text("name: harness\nconfig-version: 2\nprofile: analytics\n")
    (root / "models" / "sources.yml").write_text(SOURCES)
    (root / "models" / "events_inc.sql").write_text(INCREMENTAL)
    (root / "models" / "broken.sql").write_text(
        "select event_id tenant_id event_type from {{ source('tracking', 'raw_events') }}"
    )
    # Python functions dbt creates but BigQuery could not run: a body that does not compile, and an
    # entry point the body does not define.
    (root / "functions").mkdir()
    (root / "functions" / "udfs.yml").write_text(UDFS)
    (root / "functions" / "broken_body.py").write_text("def main(x):\n    return x +\n")
    (root / "functions" / "wrong_entry.py").write_text("def handler(x):\n    return x\n")
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
    assert harness.functions == ["broken_body", "wrong_entry"]
    assert {(f.mode, f.model) for f in failures} == {
        (mode, model) for mode in MODES for model in ("broken", "broken_body", "wrong_entry")
    }
    assert all("sqlglot" in f.error for f in failures if f.model == "broken")
    assert all("does not compile" in f.error for f in failures if f.model == "broken_body")
    assert all("entry_point 'main' is not a function" in f.error for f in failures if f.model == "wrong_entry")


def test_the_experiment_function_is_created_from_the_bundle_in_every_mode(compiled: list[Compiled]) -> None:
    """CREATE FUNCTION ... LANGUAGE python whose body is the committed bundle as dbt renders it."""
    project = compiled[0]
    assert project.functions == ["experiment_analyze"]
    want = bundle.rendered(bundle.TARGET.read_text(encoding="utf-8"))
    for mode in MODES:
        (create,) = project.statements[mode]["experiment_analyze"]
        assert python_function_error(create) is None
        assert " ".join(create.split()).startswith(
            "CREATE OR REPLACE FUNCTION `offline-check-project`.`analytics`.`experiment_analyze` ( document STRING )"
            ' RETURNS STRING LANGUAGE python OPTIONS( runtime_version = "python-3.11", entry_point = "main" )'
        )
        body = function_body(create)
        assert body is not None and body.strip() == want.strip()


def test_the_significance_model_on_bigquery_calls_the_function_into_duckdbs_columns(compiled: list[Compiled]) -> None:
    project = compiled[0]
    duckdb_types = {name: BIGQUERY_TYPES[sql_type] for name, sql_type in json.loads(ROW_STRUCTURE)[0].items()}
    for mode in MODES:
        select, *_ = project.statements[mode]["fct_experiment_significance"]
        tree = sqlglot.parse_one(select, read="bigquery")
        assert isinstance(tree, exp.Select) and tree.named_selects == SIGNIFICANCE_COLUMNS
        analysed = next(cte.this for cte in tree.find_all(exp.CTE) if cte.alias == "analysed")
        read = {}
        for projection in analysed.expressions:
            cast = projection.find(exp.Cast)
            if cast is not None:
                path = cast.find(exp.JSONExtractScalar) or cast.find(exp.JSONExtract)
                assert path is not None and f"$.{projection.alias_or_name}" in path.sql("bigquery"), projection.sql()
                read[projection.alias_or_name] = cast.to.sql("bigquery").upper()
        assert read == duckdb_types
        called = [f for f in analysed.find_all(exp.Dot, exp.Anonymous) if "experiment_analyze" in f.sql("bigquery")]
        assert called, "the model does not call the function"
        assert "`offline-check-project`.`analytics`.`experiment_analyze`(documents.document)" in select

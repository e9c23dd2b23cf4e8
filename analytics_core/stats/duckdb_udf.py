"""The experiment statistics as DuckDB functions, so a dbt model gets its significance rows in SQL.

A model builds each metric's per-variant sums in SQL, shapes them into the JSON document
analytics_core/stats/document.py describes (json_object, json_group_object) and calls
`experiment_analyze(document)`, which answers the JSON array of rows, the same rows as
`analytics experiments analyze --json`. `experiment_rows(document)` gives those rows already typed,
a LIST of STRUCTs (ROW_STRUCTURE describes them), to unnest::

    select unnest(experiment_rows(document), recursive := true) from experiment_documents

A malformed document fails the query with the ValueError's message (the field and the rule); data
that leaves a number undefined does not (the row's cannot_compute says which). NULL gives NULL.
"""

from __future__ import annotations

import json
import typing
from dataclasses import fields

import duckdb
from duckdb.func import PythonUDFType

from analytics_core.stats.experiments import Row, analyze, rows_json

_SQL_TYPES = {str: "VARCHAR", int: "BIGINT", float: "DOUBLE", bool: "BOOLEAN"}


def _sql_type(annotation: object) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return "VARCHAR"
    options = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]  # X | None -> X
    return _SQL_TYPES[typing.cast(type, options[0])]


_HINTS = typing.get_type_hints(Row)
ROW_STRUCTURE = json.dumps([{f.name: _sql_type(_HINTS[f.name]) for f in fields(Row)}])  # from_json's, of the rows


def analyze_document(document: str) -> str:
    """experiment_analyze(VARCHAR) -> VARCHAR: the JSON rows of a JSON document."""
    return rows_json(analyze(document))


def document_rows(document: str) -> list[dict[str, object]]:
    """experiment_rows(VARCHAR) -> STRUCT(...)[]: the rows of a JSON document, typed."""
    return [row.to_dict() for row in analyze(document)]


def register(conn: duckdb.DuckDBPyConnection) -> None:
    """Create experiment_analyze and experiment_rows on `conn`.

    Functions, not a temporary macro: dbt-duckdb runs models on cursors of the connection it
    configured, and a temporary macro is visible to its own cursor only.
    """
    varchar = duckdb.sqltype("VARCHAR")
    conn.create_function(
        "experiment_analyze", analyze_document, [varchar], varchar, type=PythonUDFType.NATIVE, side_effects=False
    )
    row = duckdb.struct_type({f.name: duckdb.sqltype(_sql_type(_HINTS[f.name])) for f in fields(Row)})
    conn.create_function(
        "experiment_rows",
        document_rows,
        [varchar],
        duckdb.list_type(row),
        type=PythonUDFType.NATIVE,
        side_effects=False,
    )

"""Filters over nullable columns (the raw path's page, experiment_*): a NULL compares as '', as documented.

The conditions are written without coalesce() on the column (it kept DuckDB from pushing the filter into
the scan); each must select exactly the rows `coalesce(value, '') [NOT] IN (...)` selects.
"""

from __future__ import annotations

import itertools

import duckdb
import pytest

from api.engine.sql.parts import conditions
from api.engine.validation import Condition

LISTS = [["/a"], ["/a", "/b"], [""], ["", "/a"], ["/z"]]


@pytest.mark.parametrize(("op", "values"), list(itertools.product(["in", "not_in"], LISTS)))
def test_a_null_compares_as_the_empty_string(op: str, values: list[str]) -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT * FROM (VALUES (NULL), (''), ('/a'), ('/b'), ('/c')) AS v(page)")
    params: list[object] = []
    (where,) = conditions([Condition("page", op, tuple(values))], {"page": "page"}, params, missing="")
    got = {r[0] for r in con.execute(f"SELECT page FROM t WHERE {where}", params).fetchall()}
    listed = ", ".join("'" + v + "'" for v in values)
    negated = "NOT " if op == "not_in" else ""
    reference = f"SELECT page FROM t WHERE coalesce(page, '') {negated}IN ({listed})"
    assert got == {r[0] for r in con.execute(reference).fetchall()}

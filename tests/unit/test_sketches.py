"""HyperLogLog sketches of the DuckDB rollups, merged and estimated in Python."""

from __future__ import annotations

import random

import duckdb
import pytest

from analytics_core import sketches

REST = 64 - sketches.PRECISION
# The registers of the dbt macro duckdb__sketch_from_events, for a table `users(k)`.
REGISTERS_SQL = f"""
    SELECT list(idx * 64 + rank ORDER BY idx) FROM (
        SELECT idx, max(rank) AS rank FROM (
            SELECT CAST(h >> {REST} AS INTEGER) AS idx,
                CASE WHEN rest = 0 THEN {REST + 1}
                     ELSE {REST} - (floor(log2(rest))::INTEGER
                        - CASE WHEN (1::UBIGINT << floor(log2(rest))::INTEGER) > rest THEN 1 ELSE 0 END)
                END AS rank
            FROM (SELECT h, h & ((1::UBIGINT << {REST}) - 1) AS rest FROM (SELECT hash(k) AS h FROM users))
        ) GROUP BY idx
    )
"""


def sketch_of(con: duckdb.DuckDBPyConnection, keys: list[str]) -> list[int]:
    con.execute("CREATE OR REPLACE TABLE users AS SELECT unnest($keys) AS k", {"keys": keys})
    return con.execute(REGISTERS_SQL).fetchone()[0]  # type: ignore[index]


@pytest.mark.parametrize("n", [1, 7, 100, 5_000, 40_000, 200_000])
def test_estimates_are_within_two_percent_of_the_exact_count(n: int) -> None:
    rng = random.Random(n)
    keys = [f"usr_{rng.getrandbits(64):x}" for _ in range(n)]
    con = duckdb.connect()
    estimate = sketches.estimate(sketch_of(con, keys))
    assert abs(estimate - len(set(keys))) <= 0.02 * len(set(keys))


def test_merge_equals_the_sketch_of_the_union_and_ignores_repeats() -> None:
    con = duckdb.connect()
    a = [f"a{i}" for i in range(3_000)]
    b = [f"b{i}" for i in range(2_000)] + a[:1_000]  # overlapping users count once
    merged = sketches.merge([sketch_of(con, a), sketch_of(con, b), None])
    assert merged == sketch_of(con, a + b)
    assert abs(sketches.estimate(merged) - 5_000) <= 100


def test_empty_sketches_estimate_zero() -> None:
    assert sketches.estimate([]) == 0.0
    assert sketches.estimate(None) == 0.0
    assert sketches.merge([]) == []


def test_duckdb_hash_is_the_one_the_stored_sketches_were_built_with() -> None:
    # Day sketches are kept for ever and merged with new ones: if a DuckDB upgrade changed hash(),
    # the same user would land in other registers and be counted twice. This pins it.
    assert duckdb.connect().execute("SELECT hash('usr_1')").fetchone() == (HASH_USR_1,)


HASH_USR_1 = 4722121946528412671

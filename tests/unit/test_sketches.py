"""The rollups' unique-user sketches: hll_sketch, hll_merge, hll_estimate as dbt runs them, and the API's merge."""

from __future__ import annotations

import random

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from analytics_core import hll, sketches
from analytics_core.dbt_plugin import Plugin


@pytest.fixture(scope="module")
def con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    Plugin(name="dbt_plugin", plugin_config={}).configure_connection(con)  # as dbt-duckdb does
    return con


def keys_of(n: int, seed: int, prefix: str = "usr_") -> list[str]:
    rng = random.Random(seed)
    return [f"{prefix}{rng.getrandbits(64):x}" for _ in range(n)]


def sql_sketch(con: duckdb.DuckDBPyConnection, keys: list[str]) -> bytes:
    """hll_sketch over a table of user keys, as the dbt macro calls it (repeats included)."""
    got = con.execute("SELECT hll_sketch(list(hash(k))) FROM unnest($keys::VARCHAR[]) AS t (k)", {"keys": keys})
    return got.fetchone()[0]  # type: ignore[index]


@pytest.mark.parametrize("n", [1, 7, 100, 8_192, 8_193, 40_000])
def test_sql_sketch_is_the_hll_sketch_of_the_keys(con: duckdb.DuckDBPyConnection, n: int) -> None:
    keys = keys_of(n, n)
    got = sql_sketch(con, keys + keys[: n // 3])  # a user's second event adds nothing
    assert got == hll.Sketch.from_keys(keys).to_bytes()
    assert hll.Sketch.from_bytes(got).is_sparse is (n <= sketches.EXACT_UP_TO)


@pytest.mark.parametrize("n", [1, 18, 49, 5_000, 8_192])
def test_estimates_are_exact_up_to_8192_users(con: duckdb.DuckDBPyConnection, n: int) -> None:
    estimate = con.execute("SELECT hll_estimate($s::BLOB)", {"s": sql_sketch(con, keys_of(n, n))}).fetchone()
    assert estimate == (float(n),)
    assert sketches.is_exact(float(n))


@pytest.mark.parametrize("n", [8_193, 9_000, 40_000, 200_000])
def test_dense_estimates_are_within_one_percent_and_never_read_as_exact(con: duckdb.DuckDBPyConnection, n: int) -> None:
    row = con.execute("SELECT hll_estimate($s::BLOB)", {"s": sql_sketch(con, keys_of(n, n))}).fetchone()
    assert row is not None
    assert abs(row[0] - n) <= 0.01 * n
    assert row[0] >= sketches.DENSE_FLOOR and not sketches.is_exact(row[0])


def test_merging_any_split_gives_the_sketch_of_the_whole(con: duckdb.DuckDBPyConnection) -> None:
    """Minutes into hours into days, with users repeated across them: bit for bit the day's own sketch."""
    rng = random.Random(5)
    for users in (60, 3_000, 8_192, 20_000):
        pool = keys_of(users, users)
        events = [(rng.randrange(24), rng.randrange(60), k) for k in pool] + [
            (rng.randrange(24), rng.randrange(60), rng.choice(pool)) for _ in range(users)
        ]
        con.execute("CREATE OR REPLACE TEMP TABLE ev (h INTEGER, m INTEGER, k VARCHAR)")
        con.executemany("INSERT INTO ev VALUES (?, ?, ?)", events)
        day = con.execute(
            "WITH minutes AS (SELECT h, m, hll_sketch(list(hash(k))) AS s FROM ev GROUP BY h, m),"
            " hours AS (SELECT h, hll_merge(list(s)) AS s FROM minutes GROUP BY h)"
            " SELECT hll_merge(list(s)), (SELECT hll_sketch(list(hash(k))) FROM ev) FROM hours"
        ).fetchone()
        assert day is not None and day[0] == day[1] == hll.Sketch.from_keys(pool).to_bytes()


def test_null_lists_and_sketches(con: duckdb.DuckDBPyConnection) -> None:
    row = con.execute(
        "SELECT hll_sketch(NULL::UBIGINT[]), hll_merge(NULL::BLOB[]), hll_estimate(NULL::BLOB),"
        " hll_estimate(hll_merge([NULL::BLOB, hll_sketch([7]::UBIGINT[])]))"
    ).fetchone()
    assert row == (None, None, None, 1.0)


def test_merged_estimates_unions_by_owner() -> None:
    rng = random.Random(9)
    sets = [keys_of(rng.choice((1, 40, 3_000, 9_000)), seed) for seed in range(12)]
    owners = [rng.randrange(4) for _ in sets] + [0, 3]
    column = [hll.Sketch.from_keys(s).to_bytes() for s in sets] + [None, None]  # summed rows: no sketch
    got = sketches.merged_estimates(np.array(owners), 5, pa.chunked_array([column[:5], column[5:]], pa.binary()))
    for union in range(5):
        users = {k for s, o in zip(sets, owners, strict=False) if o == union for k in s}
        if len(users) <= sketches.EXACT_UP_TO:
            assert got[union] == len(users)
        else:
            assert abs(got[union] - len(users)) <= 0.01 * len(users)
    assert got[4] == 0.0  # no sketch: no user


def test_a_dense_estimate_is_floored_above_the_sparse_range() -> None:
    # 8,193 users whose registers read low: a dense sketch holds more users than a sparse one can.
    pool = keys_of(8_193, 1)
    sketch = hll.Sketch.from_keys(pool)
    assert not sketch.is_sparse
    assert sketches.estimates([sketch])[0] == max(sketch.estimate(), sketches.DENSE_FLOOR)


def test_the_previous_register_lists_are_refused_with_the_command_that_migrates_them() -> None:
    old = pa.array([[323, 577]], type=pa.list_(pa.int32()))
    with pytest.raises(hll.SketchVersionError, match="analytics dbt build"):
        sketches.merged_estimates(np.array([0]), 1, old)

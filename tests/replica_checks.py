"""Comparing the query API's in-memory rollup replica with the lake it copies (unit and integration tests),
and waiting for a served API's replica to load."""

from __future__ import annotations

import time

import duckdb
import httpx

from api.engine.replica import TABLES

NO_DIFFERENCES = dict.fromkeys(TABLES, 0)


def differences(con: duckdb.DuckDBPyConnection, replica: str = "lake_replica") -> dict[str, int]:
    """Per replicated table: rows (every column) in only one of lake and replica, as multisets."""
    out = {}
    for table in TABLES:
        lake, mine = f"lake.main.{table}", f"{replica}.main.{table}"
        row = con.execute(
            f"SELECT (SELECT count(*) FROM (FROM {lake} EXCEPT ALL FROM {mine}))"
            f" + (SELECT count(*) FROM (FROM {mine} EXCEPT ALL FROM {lake}))"
        ).fetchone()
        assert row is not None
        out[table] = int(row[0])
    return out


def current_snapshot(con: duckdb.DuckDBPyConnection) -> int:
    """The lake's current snapshot id."""
    row = con.execute("SELECT id FROM lake.current_snapshot()").fetchone()
    assert row is not None
    return int(row[0])


def wait_ready(url: str, timeout: float = 60.0) -> None:
    """Until the API at `url` answers /readyz 200 with the in-memory replica loaded (queries read it from then on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(f"{url}/readyz", timeout=5)
            if answer.status_code == 200 and answer.json().get("replica", "").startswith("snapshot"):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready within {timeout:.0f} s")

"""The pinned warehouse and orchestration toolchain installs and loads: dbt parses, Dagster loads, DuckLake attaches."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[2]


def test_dbt_project_parses(tmp_path: Path) -> None:
    dbt = Path(sys.executable).with_name("dbt")
    result = subprocess.run(
        [str(dbt), "parse", "--profiles-dir", ".", "--target-path", str(tmp_path / "target")],
        cwd=ROOT / "dbt_project",
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ANALYTICS_WAREHOUSE_PATH": str(tmp_path),
             "DBT_LOG_PATH": str(tmp_path / "logs"), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "target" / "manifest.json").exists()


def test_dagster_code_location_loads() -> None:
    import dagster as dg

    from orchestration.definitions import defs

    assert isinstance(defs, dg.Definitions)


def test_ducklake_extension_installs_from_the_pinned_wheels(tmp_path: Path) -> None:
    import duckdb_extension_ducklake
    import duckdb_extension_sqlite_scanner

    con = duckdb.connect(config={"extension_directory": str(tmp_path / "ext")})
    for module, name in ((duckdb_extension_ducklake, "ducklake"), (duckdb_extension_sqlite_scanner, "sqlite_scanner")):
        ext = next(Path(module.__file__).parent.glob(f"extensions/*/{name}.duckdb_extension"))
        con.execute(f"INSTALL '{ext}'")
        con.execute(f"LOAD {name}")
    con.execute(f"ATTACH 'ducklake:sqlite:{tmp_path}/catalog.sqlite' AS lake (DATA_PATH '{tmp_path}/data')")
    con.execute("CREATE TABLE lake.t AS SELECT 42 AS answer")
    assert con.execute("SELECT answer FROM lake.t").fetchone() == (42,)

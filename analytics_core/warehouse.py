"""The local DuckLake warehouse: extensions from the pinned wheels, the attach, the raw and offsets tables."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import duckdb

from analytics_core.events import warehouse_ddl
from analytics_core.settings import Settings
from analytics_core.writer_lock import Held, hold

RAW_EVENTS = "raw_events"
OFFSETS = "loader_offsets"
# Where each row came from: lets anyone check that every Kafka record is in the table exactly once.
KAFKA_COLUMNS = (("_kafka_partition", "INTEGER"), ("_kafka_offset", "BIGINT"))


def catalog_uri(settings: Settings) -> str:
    """The ATTACH string of the DuckLake catalog: `ducklake:sqlite:<file>` or `ducklake:postgres:<dsn>`."""
    catalog = settings.warehouse_catalog
    if catalog.startswith(("postgres:", "postgresql:")):
        return "ducklake:postgres:" + catalog.split(":", 1)[1]
    return f"ducklake:sqlite:{sqlite_catalog_path(settings)}"


def sqlite_catalog_path(settings: Settings) -> Path:
    return (
        Path(settings.warehouse_catalog).expanduser()
        if settings.warehouse_catalog
        else settings.warehouse_path / "catalog.sqlite"
    )


def writer_lock_path(settings: Settings) -> Path | None:
    """The writers' lock file beside the SQLite catalog (`catalog.sqlite.writer-lock`); None when no lock is needed.

    Only the SQLite catalog needs it: SQLite lets one writer commit at a time and fails the other at once
    (analytics_core/writer_lock.py). BigQuery has its own concurrency, and a PostgreSQL catalog waits for
    its row locks and retries commit conflicts (its writers may also be on other machines, where a file
    lock cannot reach).
    """
    if settings.warehouse_target != "duckdb" or catalog_uri(settings).startswith("ducklake:postgres:"):
        return None
    catalog = sqlite_catalog_path(settings).absolute()
    return catalog.with_name(catalog.name + ".writer-lock")


@contextmanager
def writer_lock(settings: Settings, holder: str, timeout: float | None = None) -> Iterator[Held | None]:
    """Hold the warehouse's writer lock for the block: every writer of the DuckLake warehouse takes it around
    its writes (the loader each commit, dbt its whole invocation). None (and no lock) when the warehouse
    needs none (`writer_lock_path`). `holder` names the writer in the lock file and in the logs of whoever
    waits; `timeout` (seconds, 0 = try once) raises writer_lock.WriterLockBusy.
    """
    path = writer_lock_path(settings)
    if path is None:
        yield None
        return
    with hold(path, holder, timeout) as held:
        yield held


def data_path(settings: Settings) -> Path:
    """Absolute: the catalog stores the path, and dbt attaches from dbt_project/, not the repo root."""
    path = (
        Path(settings.warehouse_data_path).expanduser()
        if settings.warehouse_data_path
        else settings.warehouse_path / "data"
    )
    return path.resolve()


def _extension_file(module: ModuleType, name: str) -> Path:
    return next(Path(str(module.__file__)).parent.glob(f"extensions/*/{name}.duckdb_extension"))


def load_extensions(con: duckdb.DuckDBPyConnection, postgres: bool = False) -> None:
    """LOAD ducklake and the catalog's scanner, installing them from the wheel files the first time."""
    import duckdb_extension_ducklake
    import duckdb_extension_sqlite_scanner

    wanted: list[tuple[ModuleType, str]] = [(duckdb_extension_ducklake, "ducklake")]
    if postgres:
        import duckdb_extension_postgres_scanner  # optional: duckdb-extension-postgres-scanner

        wanted.append((duckdb_extension_postgres_scanner, "postgres_scanner"))
    else:
        # The SQLite extension must be installed under this name, whatever the wheel calls it.
        wanted.append((duckdb_extension_sqlite_scanner, "sqlite_scanner"))
    for module, name in wanted:
        try:
            con.execute(f"LOAD {name}")
        except duckdb.Error:  # not installed yet in this extension directory: DuckDB never downloads here
            con.execute(f"INSTALL '{_extension_file(module, name)}'")
            con.execute(f"LOAD {name}")


def _sqlite_wal(path: Path) -> None:
    # In SQLite's default rollback-journal mode an open read transaction (dbt, the API) makes every
    # loader commit fail with "database is locked"; in WAL mode readers and the writer coexist.
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.close()


def connect(settings: Settings, create: bool = True, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the warehouse attached as `settings.warehouse_alias` (tables created)."""
    postgres = catalog_uri(settings).startswith("ducklake:postgres:")
    if not postgres:
        _sqlite_wal(sqlite_catalog_path(settings))
    data = data_path(settings)
    data.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(config={"extension_directory": str(settings.cache_dir / "duckdb-extensions")})
    load_extensions(con, postgres)
    con.execute("SET TimeZone = 'UTC'")  # ts::DATE must be the UTC day whatever the host's zone
    options = f"DATA_PATH '{data}'" + (", READ_ONLY" if read_only else "")
    uri = catalog_uri(settings).replace("'", "''")  # a libpq DSN may quote values: password='a b'
    con.execute(f"ATTACH '{uri}' AS {settings.warehouse_alias} ({options})")
    if create and not read_only:
        create_tables(con, settings.warehouse_alias)
    return con


def raw_events_ddl(table: str) -> str:
    """The canonical columns of events.warehouse_ddl plus the Kafka partition and offset of each row."""
    ddl = warehouse_ddl(table).rstrip().removesuffix(")").rstrip()
    extra = "".join(f",\n    {name} {kind} NOT NULL" for name, kind in KAFKA_COLUMNS)
    return f"{ddl}{extra}\n)"


def create_tables(con: duckdb.DuckDBPyConnection, alias: str) -> None:
    con.execute(raw_events_ddl(f"{alias}.{RAW_EVENTS}"))
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {alias}.{OFFSETS} ("
        "topic VARCHAR NOT NULL, kafka_partition INTEGER NOT NULL, next_offset BIGINT NOT NULL, "
        "updated_at TIMESTAMPTZ NOT NULL)"
    )


DBT_PROJECT_DIR = Path(__file__).resolve().parent.parent / "dbt_project"


def dbt_env(settings: Settings) -> dict[str, str]:
    """Environment variables that point dbt's profiles at this warehouse (see dbt_project/profiles.yml)."""
    catalog = catalog_uri(settings)
    if catalog.startswith("ducklake:sqlite:"):  # dbt runs in dbt_project/: relative paths would move
        catalog = f"ducklake:sqlite:{sqlite_catalog_path(settings).resolve()}"
    return {
        "ANALYTICS_DBT_CATALOG": catalog,
        "ANALYTICS_DBT_DATA_PATH": str(data_path(settings).resolve()),
        "ANALYTICS_DBT_EXTENSION_DIR": str((settings.cache_dir / "duckdb-extensions").resolve()),
        "ANALYTICS_DBT_TARGET": settings.warehouse_target,
        # The checkout whose analytics_core the dbt-duckdb plugin imports (dbt_project/profiles.yml).
        "ANALYTICS_DBT_MODULE_PATH": str(DBT_PROJECT_DIR.parent),
        "ANALYTICS_BIGQUERY_PROJECT": settings.bigquery_project or "unset-project",
        "ANALYTICS_BIGQUERY_DATASET": settings.bigquery_dataset,
        "ANALYTICS_BIGQUERY_LOCATION": settings.bigquery_location,
    }

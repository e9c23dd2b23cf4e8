"""Running dbt on dbt_project/ against the configured warehouse, holding the warehouse's writer lock.

With the SQLite catalog, a dbt model that commits while the loader commits fails with "database is
locked" (DuckLake cannot retry SQLite's read-to-write lock upgrade: duckdb/ducklake issue 1309). So a
dbt command that may write holds `warehouse.writer_lock` for its whole run, retries included: the
loader's commits wait for it (the loader keeps reading Kafka meanwhile), and its models never lose
a commit to them. A writer that does not take the lock (an older loader, a hand-run script) can still
win the catalog: the failed model's transaction is rolled back whole, and every model is safe to run
again, so `dbt retry` re-runs the failed and skipped nodes after a short wait.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from analytics_core import warehouse
from analytics_core.settings import Settings

LOCK_MESSAGE = "database is locked"
# dbt commands that write the warehouse: `dbt ARGS` naming one of them holds the writer lock; so does
# one naming no known command (to be safe). The others (parse, compile, ls, docs, show, debug, ...)
# write nothing there and run without it.
WRITING_COMMANDS = frozenset({"build", "run", "test", "seed", "snapshot", "retry", "run-operation", "clone"})
READ_ONLY_COMMANDS = frozenset(
    {"parse", "compile", "ls", "list", "docs", "debug", "deps", "clean", "init", "show", "source"}
)


def venv_tool(name: str) -> str:
    """The tool installed beside this Python (the venv's bin/ need not be on PATH), else `name` from PATH."""
    path = Path(sys.executable).with_name(name)
    return str(path) if path.exists() else name


def prepare_warehouse(settings: Settings) -> None:
    """What dbt's duckdb profile needs first: the extensions installed, the raw tables created."""
    if settings.warehouse_target == "duckdb":
        warehouse.connect(settings).close()


def writes_warehouse(args: Sequence[str]) -> bool:
    """Whether `dbt ARGS` may write the warehouse, and so must hold the writer lock."""
    return any(a in WRITING_COMMANDS for a in args) or not any(a in READ_ONLY_COMMANDS for a in args)


def writer_lock(settings: Settings, args: Sequence[str], holder: str) -> AbstractContextManager[object]:
    """The warehouse writer lock for `dbt ARGS` (nothing for a read-only command, or a warehouse that needs none)."""
    if not writes_warehouse(args):
        return nullcontext()
    command = next((a for a in args if a in WRITING_COMMANDS), "")
    return warehouse.writer_lock(settings, f"{holder} {command}".strip())


def lock_failures(results: list[dict]) -> int:
    """Nodes of a dbt run_results.json that failed only because the catalog was locked."""
    return sum(1 for r in results if r.get("status") == "error" and LOCK_MESSAGE in (r.get("message") or ""))


def dbt_command(args: list[str], target_path: Path | None = None, log_path: Path | None = None) -> list[str]:
    folder = str(warehouse.DBT_PROJECT_DIR)
    command = [venv_tool("dbt"), *args, "--project-dir", folder, "--profiles-dir", folder]
    if target_path:
        command += ["--target-path", str(target_path)]
    if log_path:
        command += ["--log-path", str(log_path)]
    return command


def _lock_failures(target_path: Path) -> int:
    try:
        return lock_failures(json.loads((target_path / "run_results.json").read_text())["results"])
    except (OSError, ValueError, KeyError):
        return 0


def run_dbt(
    settings: Settings,
    args: list[str],
    target_path: Path | None = None,
    log_path: Path | None = None,
    capture: bool = False,
    retries: int = 5,
) -> subprocess.CompletedProcess[str]:
    """`dbt ARGS` on the project under the writer lock; lock conflicts are retried with `dbt retry`, output joined."""
    with writer_lock(settings, args, "dbt"):
        return _run_dbt(settings, args, target_path, log_path, capture, retries)


def _run_dbt(
    settings: Settings,
    args: list[str],
    target_path: Path | None,
    log_path: Path | None,
    capture: bool,
    retries: int,
) -> subprocess.CompletedProcess[str]:
    prepare_warehouse(settings)
    env = {**os.environ, **warehouse.dbt_env(settings)}
    target = target_path or warehouse.DBT_PROJECT_DIR / "target"
    done = subprocess.run(
        dbt_command(args, target_path, log_path), env=env, capture_output=capture, text=True, check=False
    )
    stdout = done.stdout or ""
    for attempt in range(retries):
        if done.returncode == 0 or not _lock_failures(target):
            break
        time.sleep(0.5 * (attempt + 1))
        done = subprocess.run(
            dbt_command(["retry"], target_path, log_path), env=env, capture_output=capture, text=True, check=False
        )
        stdout += done.stdout or ""
    return subprocess.CompletedProcess(done.args, done.returncode, stdout, done.stderr)


def main() -> None:
    """`python -m analytics_core.dbt sqlfluff lint models tests`: a tool run in dbt_project/ against a warehouse.

    sqlfluff renders the models as dbt compiles them, and an incremental model compiles otherwise once its
    table exists: so sqlfluff gets a new, empty warehouse of its own, and lints what a first build runs
    whatever this machine's warehouse holds (`make demo`'s, say); other tools get the configured one.
    """
    from analytics_core.settings import get_settings

    settings = get_settings()
    with tempfile.TemporaryDirectory(prefix="analytics-lint-") as scratch:
        if Path(sys.argv[1]).name == "sqlfluff":
            settings = settings.model_copy(
                update={"warehouse_path": Path(scratch), "warehouse_catalog": "", "warehouse_data_path": ""}
            )
        warehouse.connect(settings).close()  # .sqlfluff renders with the duckdb target whatever the settings say
        tool = venv_tool(sys.argv[1])
        env = {**os.environ, **warehouse.dbt_env(settings)}
        returncode = subprocess.run([tool, *sys.argv[2:]], cwd=warehouse.DBT_PROJECT_DIR, env=env).returncode
    raise SystemExit(returncode)


if __name__ == "__main__":
    main()

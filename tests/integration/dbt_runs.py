"""Running dbt on the project against a test warehouse, as `analytics dbt` does."""

from __future__ import annotations

import subprocess
from typing import Any

from analytics_core import dbt, warehouse
from analytics_core.settings import Settings


def run_dbt(settings: Settings, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`dbt ARGS` on dbt_project/ with this warehouse; target and logs under the warehouse folder."""
    scratch = settings.warehouse_path / "dbt"
    done = dbt.run_dbt(settings, list(args), scratch / "target", scratch / "logs", capture=True)
    if check and done.returncode != 0:
        raise AssertionError(f"dbt {' '.join(args)} failed:\n{done.stdout[-6000:]}\n{done.stderr[-2000:]}")
    return done


def lake_query(settings: Settings, sql: str, params: Any = None) -> list[tuple]:
    """Rows of `sql`, with {lake} standing for the attached warehouse."""
    con = warehouse.connect(settings)
    try:
        return con.execute(sql.replace("{lake}", settings.warehouse_alias), params).fetchall()
    finally:
        con.close()

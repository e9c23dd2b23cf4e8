"""dbt-duckdb plugin (dbt_project/profiles.yml, `plugins:`): sketch and experiment functions on dbt's connection.

dbt-duckdb imports this module by name and calls `Plugin.configure_connection` on the connection
it opens, before attaching the lake; analytics_core.sketches.register creates hll_sketch, hll_merge
and hll_estimate there (and refuses a DuckDB whose hash() is not the one the sketch format is pinned
to); analytics_core.stats.duckdb_udf.register creates experiment_analyze and experiment_rows, with
which fct_experiment_significance computes its rows by the code `analytics experiments analyze`
runs. The profile's `module_paths` puts the checkout that runs dbt first on the path, so a
worktree's dbt runs that worktree's code.
"""

from __future__ import annotations

from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin

from analytics_core import sketches
from analytics_core.stats import duckdb_udf


class Plugin(BasePlugin):
    def configure_connection(self, conn: Any) -> None:
        sketches.register(conn)
        duckdb_udf.register(conn)

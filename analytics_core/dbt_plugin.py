"""dbt-duckdb plugin (dbt_project/profiles.yml, `plugins:`): the sketch functions on dbt's DuckDB connection.

dbt-duckdb imports this module by name and calls `Plugin.configure_connection` on the connection
it opens, before attaching the lake; analytics_core.sketches.register creates hll_sketch, hll_merge
and hll_estimate there (and refuses a DuckDB whose hash() is not the one the sketch format is pinned
to). The profile's `module_paths` puts the checkout that runs dbt first on the path, so a worktree's
dbt runs that worktree's code.
"""

from __future__ import annotations

from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin

from analytics_core import sketches


class Plugin(BasePlugin):
    def configure_connection(self, conn: Any) -> None:
        sketches.register(conn)

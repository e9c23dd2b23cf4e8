"""The Dagster code location: one Definitions per domain folder under orchestration/defs, merged."""

import dagster as dg

from orchestration.defs import dbt, realtime, replay, warehouse

defs = dg.Definitions.merge(warehouse.defs, dbt.defs, replay.defs, realtime.defs)

"""Realtime domain: the reconciliation of the realtime layer (Redis) with the warehouse minute rollups."""

import dagster as dg

from orchestration.defs.realtime.checks import realtime_matches_warehouse

defs = dg.Definitions(asset_checks=[realtime_matches_warehouse])

"""Replay domain: reprocess Kafka from a point in time through the warehouse and the rollups."""

import dagster as dg

from orchestration.defs.replay.jobs import replay

defs = dg.Definitions(jobs=[replay])

"""Dagster code location: loader and dbt assets, schedules, backfill and replay jobs."""

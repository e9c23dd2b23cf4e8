"""Warehouse loaders: consume tracking.events (group loaders.warehouse) into the raw events table.

The raw table's DDL comes from analytics_core.events.warehouse_ddl; the loader itself is built
in the warehouse-path issue.
"""

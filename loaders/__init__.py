"""Warehouse loaders: consume tracking.events (group loaders.warehouse) into the raw events table.

The raw table's DDL comes from analytics_core.events.warehouse_ddl; the loader (warehouse_loader.py)
stores each micro-batch's offsets in the same commit as its rows; bigquery_writer.py writes to BigQuery.
"""

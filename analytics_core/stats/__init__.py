"""A/B experiment statistics: the rows, their DuckDB functions and BigQuery's bundle (docs/EXPERIMENTS.md)."""

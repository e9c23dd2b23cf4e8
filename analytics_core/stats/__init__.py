"""A/B experiment statistics: the distributions, the significance rows, their DuckDB functions (docs/EXPERIMENTS.md)."""

"""The SQL the query engine runs on the warehouse: tenant-scoped, filter values and times as bound parameters.

- `rollups.py`: reading the minute/hour/day rollups (lake or in-memory replica): one SQL over the grain
  tables a plan needs, bucketed and grouped in DuckDB; unique-user sketches merged in numpy.
- `raw_events.py`: one SQL over the staged (deduplicated) raw events, for what no rollup answers.
- `parts.py`: the fragments both share (bucket index by epoch arithmetic, filter conditions, top-N flag).
"""

-- sqlfluff:ignore:parsing
-- (sqlfluff's DuckDB grammar does not know the GROUPING SETS the macro generates)
-- Hour buckets, kept for ever; the day rollups and whole-hour time zones are built from them.
-- The post-hook rebuilds metrics whose definition changed over all history and records what the
-- rows hold in fct_metric_definitions, in the same transaction (macros/definitions.sql).
-- The pre-hook moves a table of the old INTEGER[] sketches to BLOB ones (macros/sketches.sql).
{{ config(
    incremental_strategy=rollup_strategy(),
    unique_key=rollup_key(),
    tags=['hourly'],
    pre_hook="{{ migrate_sketch_column() }}",
    post_hook="{{ sync_metric_definitions('hour') }}",
) }}

{{ rollup_from_events('hour') }}

-- sqlfluff:ignore:parsing
-- (sqlfluff's DuckDB grammar does not know the GROUPING SETS the macro generates)
-- Hour buckets, kept for ever; the day rollups and whole-hour time zones are built from them.
{{ config(
    incremental_strategy=rollup_strategy(),
    unique_key=rollup_key(),
    tags=['hourly'],
) }}

{{ rollup_from_events('hour') }}

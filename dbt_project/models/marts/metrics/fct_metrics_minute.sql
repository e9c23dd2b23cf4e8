-- sqlfluff:ignore:parsing
-- (sqlfluff's DuckDB grammar does not know the GROUPING SETS the macro generates)
-- Minute buckets for the last `minute_retention_days` days: live dashboards and time zones with
-- :30/:45 offsets. Older minutes are deleted after each build. The first post-hook rebuilds
-- metrics whose definition changed over the days kept and records it (macros/definitions.sql).
-- The pre-hook moves a table of the old INTEGER[] sketches to BLOB ones (macros/sketches.sql).
{{ config(
    incremental_strategy=rollup_strategy(),
    unique_key=rollup_key(),
    tags=['minute'],
    pre_hook="{{ migrate_sketch_column() }}",
    post_hook=[
        "{{ sync_metric_definitions('minute', retention_days=var('minute_retention_days')) }}",
        "delete from {{ this }} where window_start < {{ shift_timestamp(dbt.current_timestamp(), -var('minute_retention_days'), 'day') }}",
    ],
) }}

{{ rollup_from_events('minute', retention_days=var('minute_retention_days')) }}

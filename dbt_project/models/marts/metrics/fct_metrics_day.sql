-- Day buckets (UTC), kept for ever; merged from the hour rollups of the days they touch. Metrics
-- whose day history is rebuilt (their definition changed) are left to the post-hook, which merges
-- their hours a slice at a time (macros/definitions.sql).
-- The pre-hook moves a table of the old INTEGER[] sketches to BLOB ones (macros/sketches.sql).
{{ config(
    incremental_strategy=rollup_strategy(),
    unique_key=rollup_key(),
    tags=['hourly'],
    pre_hook="{{ migrate_sketch_column() }}",
    post_hook="{{ sync_metric_definitions('day', source_grain='hour') }}",
) }}

{{ rollup_from_rollups('fct_metrics_hour', 'day', rebuilding=stale_metrics('day', source_grain='hour')) }}

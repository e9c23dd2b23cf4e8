-- Day buckets (UTC), kept for ever; merged from the hour rollups of the days they touch.
{{ config(
    incremental_strategy=rollup_strategy(),
    unique_key=rollup_key(),
    tags=['hourly'],
) }}

{{ rollup_from_rollups('fct_metrics_hour', 'day') }}

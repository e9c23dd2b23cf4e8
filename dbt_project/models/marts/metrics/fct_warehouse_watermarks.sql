-- How far each rollup grain is complete, per tenant: every event received before `complete_until`
-- is in that grain's buckets (later arrivals, e.g. offline devices, restate buckets as corrections).
-- Per Kafka partition, the staged events are complete up to the latest one received; the lake is
-- complete up to the earliest of those. The query API reads realtime numbers past this point.
-- `metric_definitions` lists, as `metric=fingerprint,...`, the definition each stored metric's
-- history at that grain was built by (fct_metric_definitions, written by the rollup models): the
-- API compares them with its catalogue's, in the same read as the watermark.
{{ config(
    materialized='table',
    tags=['minute', 'hourly'],
    pre_hook="{{ ensure_metric_definitions() }}",
) }}

with

events as (

    select *
    from {{ ref('stg_tracking__events') }}

),

builds as (

    select
        'minute' as granularity,
        max(_built_at) as built_at
    from {{ ref('fct_metrics_minute') }}
    union all
    select
        'hour' as granularity,
        max(_built_at) as built_at
    from {{ ref('fct_metrics_hour') }}
    union all
    select
        'day' as granularity,
        max(_built_at) as built_at
    from {{ ref('fct_metrics_day') }}

),

staged_batches as (

    select
        _kafka_partition,
        _staged_at,
        max(received_at) as received_until
    from events
    group by _kafka_partition, _staged_at

),

partition_progress as (

    select
        builds.granularity,
        builds.built_at,
        staged_batches._kafka_partition,
        max(staged_batches.received_until) as received_until
    from builds
    inner join staged_batches on builds.built_at >= staged_batches._staged_at
    group by builds.granularity, builds.built_at, staged_batches._kafka_partition

),

grain_watermarks as (

    select
        granularity,
        built_at,
        min(received_until) as complete_until
    from partition_progress
    group by granularity, built_at

),

definitions as (

    select
        granularity,
        {{ dbt.listagg("metric || '=' || fingerprint", "','", "order by metric") }} as metric_definitions
    from {{ metric_definitions_relation() }}
    group by granularity

),

tenants as (

    select distinct tenant_id from events

),

final as (

    select
        tenants.tenant_id,
        grain_watermarks.granularity,
        grain_watermarks.complete_until,
        grain_watermarks.built_at as rollups_built_at,
        definitions.metric_definitions
    from tenants
    cross join grain_watermarks
    left join definitions on grain_watermarks.granularity = definitions.granularity

)

select *
from final

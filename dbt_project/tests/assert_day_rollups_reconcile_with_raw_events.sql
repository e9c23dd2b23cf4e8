-- Day buckets of the additive metrics equal a recomputation from the raw events that staging had
-- seen (each partition up to its last staged offset), for days before the latest one: resends
-- counted once, bots only in traffic_events.
with

staged_offsets as (

    select
        _kafka_partition,
        max(_kafka_offset) as staged_offset
    from {{ ref('stg_tracking__events') }}
    group by _kafka_partition

),

raw_events as (

    select raw.*
    from {{ source('tracking', 'raw_events') }} as raw
    inner join staged_offsets
        on
            raw._kafka_partition = staged_offsets._kafka_partition
            and raw._kafka_offset <= staged_offsets.staged_offset

),

distinct_events as (

    select
        tenant_id,
        event_id,
        min({{ dbt.date_trunc('day', 'timestamp') }}) as day,
        max(cast(is_bot as integer)) as is_bot,
        max(event_type) as event_type,
        max(revenue) as revenue
    from raw_events
    group by tenant_id, event_id

),

-- Purchases: the event types of each tenant's purchase mapping (metric_catalogue.purchases).
classified as (

    select
        tenant_id,
        day,
        is_bot,
        revenue,
        coalesce({{ event_type_in(['purchase'], sql_string, purchase_types()) }}, false) as is_purchase
    from distinct_events

),

last_day as (

    select max(day) as day from distinct_events

),

recomputed as (

    select
        classified.tenant_id,
        classified.day,
        sum(1 - classified.is_bot) as events,
        count(*) as traffic_events,
        sum(case when classified.is_purchase then 1 - classified.is_bot else 0 end) as purchases,
        sum(
            case
                when classified.is_purchase and classified.is_bot = 0
                    then coalesce(classified.revenue, 0)
                else 0
            end
        ) as revenue
    from classified
    inner join last_day on classified.day < last_day.day
    group by classified.tenant_id, classified.day

),

rolled_up as (

    select
        day_rollups.tenant_id,
        day_rollups.window_start as day,
        sum(case when day_rollups.metric = 'events' then day_rollups.value else 0 end) as events,
        sum(case when day_rollups.metric = 'traffic_events' then day_rollups.value else 0 end) as traffic_events,
        sum(case when day_rollups.metric = 'purchases' then day_rollups.value else 0 end) as purchases,
        sum(case when day_rollups.metric = 'revenue' then day_rollups.value else 0 end) as revenue
    from {{ ref('fct_metrics_day') }} as day_rollups
    inner join last_day on day_rollups.window_start < last_day.day
    where day_rollups.dimension_set = ''
    group by day_rollups.tenant_id, day_rollups.window_start

),

final as (

    select
        recomputed.events as raw_events,
        rolled_up.events as rollup_events,
        recomputed.revenue as raw_revenue,
        rolled_up.revenue as rollup_revenue,
        coalesce(recomputed.tenant_id, rolled_up.tenant_id) as tenant_id,
        coalesce(recomputed.day, rolled_up.day) as day
    from recomputed
    full outer join rolled_up
        on
            recomputed.tenant_id = rolled_up.tenant_id
            and recomputed.day = rolled_up.day
    where
        recomputed.tenant_id is null
        or rolled_up.tenant_id is null
        or recomputed.events != rolled_up.events
        or recomputed.traffic_events != rolled_up.traffic_events
        or recomputed.purchases != rolled_up.purchases
        or abs(recomputed.revenue - rolled_up.revenue) > 0.005

)

select * from final

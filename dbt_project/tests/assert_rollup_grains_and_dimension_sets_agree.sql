-- For additive metrics, every dimension set sums to the total of its bucket, and the hours of a
-- day sum to the day: the rollups are one consistent cube whichever row a query reads.
with

day_rollups as (

    select *
    from {{ ref('fct_metrics_day') }}
    where metric in ('events', 'traffic_events', 'purchases', 'revenue')

),

hour_rollups as (

    select *
    from {{ ref('fct_metrics_hour') }}
    where metric in ('events', 'traffic_events', 'purchases', 'revenue')

),

set_totals as (

    select
        tenant_id,
        metric,
        window_start,
        dimension_set,
        sum(value) as value
    from day_rollups
    group by tenant_id, metric, window_start, dimension_set

),

set_mismatches as (

    select
        sets.tenant_id,
        sets.metric,
        sets.window_start,
        sets.dimension_set,
        sets.value,
        totals.value as total
    from set_totals as sets
    inner join set_totals as totals
        on
            sets.tenant_id = totals.tenant_id
            and sets.metric = totals.metric
            and sets.window_start = totals.window_start
            and totals.dimension_set = ''
    where abs(sets.value - totals.value) > 0.005

),

hours_by_day as (

    select
        tenant_id,
        metric,
        {{ dbt.date_trunc('day', 'window_start') }} as window_start,
        sum(value) as value
    from hour_rollups
    where dimension_set = ''
    group by tenant_id, metric, {{ dbt.date_trunc('day', 'window_start') }}

),

grain_mismatches as (

    select
        hours.tenant_id,
        hours.metric,
        hours.window_start,
        'hours vs day' as dimension_set,
        hours.value,
        days.value as total
    from hours_by_day as hours
    full outer join (
        select *
        from day_rollups
        where dimension_set = ''
    ) as days
        on
            hours.tenant_id = days.tenant_id
            and hours.metric = days.metric
            and hours.window_start = days.window_start
    where abs(coalesce(hours.value, 0) - coalesce(days.value, 0)) > 0.005

),

final as (

    select *
    from set_mismatches
    union all
    select *
    from grain_mismatches

)

select *
from final

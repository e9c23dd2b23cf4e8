-- DuckDB: each day's unique-user sketch (total of every unique metric), merged from its hours' sketches,
-- is bit for bit the sketch built directly over that day's staged events: merging any split of a set of
-- users gives the sketch of the whole (analytics_core/hll.py), so days, hours and minutes never drift
-- apart. BigQuery's HLL_COUNT sketches make no such promise: the test is DuckDB's.
{{ config(enabled=target.type == 'duckdb') }}

with

events as (

    select *
    from {{ ref('stg_tracking__events') }}

),

recomputed as (
    {%- for name, metric in catalogue_metrics(['unique']) %}
        select
            tenant_id,
            {{ dbt.date_trunc('day', 'event_at') }} as day,
            '{{ name }}' as metric,
            hll_sketch(list(hash(user_key))) as sketch
        from events
        where user_key is not null and {{ metric_condition(metric) }}
        group by tenant_id, {{ dbt.date_trunc('day', 'event_at') }}
        {% if not loop.last %}union all{% endif %}
    {%- endfor %}
),

rolled_up as (

    select
        tenant_id,
        window_start as day,
        metric,
        sketch
    from {{ ref('fct_metrics_day') }}
    where dimension_set = '' and sketch is not null

),

final as (

    select
        coalesce(recomputed.tenant_id, rolled_up.tenant_id) as tenant_id,
        coalesce(recomputed.day, rolled_up.day) as day,
        coalesce(recomputed.metric, rolled_up.metric) as metric,
        octet_length(recomputed.sketch) as recomputed_bytes,
        octet_length(rolled_up.sketch) as rollup_bytes
    from recomputed
    full outer join rolled_up
        on
            recomputed.tenant_id = rolled_up.tenant_id
            and recomputed.day = rolled_up.day
            and recomputed.metric = rolled_up.metric
    where recomputed.sketch is distinct from rolled_up.sketch

)

select * from final

{#-
    Minute and hour rollups, from the staged events. Incremental runs rebuild exactly the buckets
    that received events since the last build, however late those events came, plus every bucket
    from `rebuild_from` on. With `window` (two timestamp literals), the rows of the buckets in
    [window[0], window[1]) instead, whatever was built before: one slice of a metric's history
    rebuild (sync_metric_definitions). `metrics`: only these catalogue metrics (default: all stored).
-#}
{% macro rollup_from_events(grain, retention_days=none, metrics=none, window=none) %}
{%- set dims = rollup_dimensions() %}
{%- set bucket = dbt.date_trunc(grain, 'event_at') %}
{%- set incremental = is_incremental() and window is none %}
{%- set additive = [] %}
{%- for name, metric in catalogue_metrics(['count', 'sum']) if metrics is none or name in metrics %}{% do additive.append((name, metric)) %}{% endfor %}
{%- set uniques = [] %}
{%- for name, metric in catalogue_metrics(['unique']) if metrics is none or name in metrics %}{% do uniques.append((name, metric_condition(metric))) %}{% endfor %}
{%- set dimension_sets = var('metric_catalogue')['dimension_sets'] %}
{%- set sketch_sets = var('metric_catalogue').get('sketch_dimension_sets') or dimension_sets %}

with

events as (

    select * from {{ ref('stg_tracking__events') }}

),

{% if incremental %}
touched_buckets as (

    select distinct tenant_id, {{ bucket }} as window_start
    from events
    where _staged_at > {{ last_built_at() }}
        {% if rebuild_point() %}or event_at >= {{ rebuild_point() }}{% endif %}

),
{% endif %}

bucketed as (

    select
        events.tenant_id,
        {{ bucket }} as window_start,
        {{ dims | join(', ') }},
        user_key,
        revenue,
        is_bot
    from events
    {% if incremental %}
    inner join touched_buckets
        on events.tenant_id = touched_buckets.tenant_id
        and {{ bucket }} = touched_buckets.window_start
    where events.event_at >= (select min(window_start) from touched_buckets)
    {% elif window %}
    where events.event_at >= {{ window[0] }} and events.event_at < {{ window[1] }}
    {% else %}
    where true
    {% endif %}
    {% if retention_days %}
        and events.event_at >= {{ shift_timestamp(dbt.current_timestamp(), -retention_days, 'day') }}
    {% endif %}

),

{% if additive %}
set_measures as (

    select
        tenant_id,
        window_start,
        {{ dimension_set_columns(dimension_sets) }},
        {%- for name, metric in additive %}
        sum({{ metric_value(metric) }}) as {{ name }}{{ ',' if not loop.last }}
        {%- endfor %}
    from bucketed
    {{ grouping_sets(['tenant_id', 'window_start'], dimension_sets) }}

),

additive_rows as (
    {%- for name, metric in additive %}
    select tenant_id, window_start, dimension_set, {{ dims | join(', ') }},
        '{{ name }}' as metric, {{ name }} as value, cast(null as {{ sketch_type() }}) as sketch
    from set_measures
    where {{ name }} != 0
    {% if not loop.last %}union all{% endif %}
    {%- endfor %}
),
{% endif %}

{% if uniques %}
set_sketches as (
    {{ sketch_by_sets('bucketed', ['tenant_id', 'window_start'], sketch_sets, uniques, 'user_key') }}
),

unique_rows as (

    select tenant_id, window_start, dimension_set, {{ dims | join(', ') }},
        metric, {{ sketch_estimate('sketch') }} as value, sketch
    from set_sketches

),
{% endif %}

final as (

    {% if additive %}
    select {{ rollup_columns(grain) }} from additive_rows
    {% endif %}
    {% if additive and uniques %}
    union all
    {% endif %}
    {% if uniques %}
    select {{ rollup_columns(grain) }} from unique_rows
    {% endif %}

)

select * from final
{% endmacro %}

{#-
    A coarser rollup merged from a finer one: additive values summed, sketches merged. Incremental
    runs rebuild the coarse buckets holding any fine bucket rebuilt since the last build, except
    for fine rows of the metrics in `rebuilding` (their whole history is rebuilt by the model's
    post-hook, sync_metric_definitions, a slice at a time). With `window` (two timestamp literals),
    the coarse buckets in [window[0], window[1]) instead: one slice of such a rebuild. `metrics`:
    only these catalogue metrics (default: all stored).
-#}
{% macro rollup_from_rollups(source_model, grain, metrics=none, window=none, rebuilding=[]) %}
{%- set dims = rollup_dimensions() %}
{%- set key = ['tenant_id', 'window_start', 'dimension_set'] + dims %}
{%- set incremental = is_incremental() and window is none %}
{%- set selected = [] %}
{%- set unique_names = [] %}
{%- for name, metric in catalogue_metrics(['count', 'sum', 'unique']) if metrics is none or name in metrics %}
    {%- do selected.append(dbt.string_literal(name)) %}
    {%- if metric['kind'] == 'unique' %}{% do unique_names.append(dbt.string_literal(name)) %}{% endif %}
{%- endfor %}
{%- set additive = selected | length > unique_names | length %}
{%- set skipped = [] %}
{%- for name in rebuilding %}{% do skipped.append(dbt.string_literal(name)) %}{% endfor %}

with

fine_rollups as (

    select * from {{ ref(source_model) }}

),

{% if incremental %}
touched_buckets as (

    select distinct tenant_id, {{ dbt.date_trunc(grain, 'window_start') }} as coarse_start
    from fine_rollups
    where (
        _built_at > {{ last_built_at() }}
        {% if rebuild_point() %}or window_start >= {{ rebuild_point() }}{% endif %}
    )
    {% if skipped %}and metric not in ({{ skipped | join(', ') }}){% endif %}

),
{% endif %}

rebucketed as (

    select
        fine_rollups.tenant_id,
        {{ dbt.date_trunc(grain, 'fine_rollups.window_start') }} as window_start,
        fine_rollups.metric,
        fine_rollups.dimension_set,
        {%- for dim in dims %}
        fine_rollups.{{ dim }},
        {%- endfor %}
        fine_rollups.value,
        fine_rollups.sketch
    from fine_rollups
    {% if incremental %}
    inner join touched_buckets
        on fine_rollups.tenant_id = touched_buckets.tenant_id
        and {{ dbt.date_trunc(grain, 'fine_rollups.window_start') }} = touched_buckets.coarse_start
    where fine_rollups.window_start >= (select min(coarse_start) from touched_buckets)
    {% elif window %}
    where fine_rollups.window_start >= {{ window[0] }} and fine_rollups.window_start < {{ window[1] }}
    {% else %}
    where true
    {% endif %}
    {% if metrics is not none %}
        and fine_rollups.metric in ({{ selected | join(', ') }})
    {% endif %}

),

{% if additive %}
additive_rows as (

    select {{ key | join(', ') }}, metric, sum(value) as value, cast(null as {{ sketch_type() }}) as sketch
    from rebucketed
    {% if unique_names %}where metric not in ({{ unique_names | join(', ') }}){% endif %}
    group by {{ key | join(', ') }}, metric

),
{% endif %}

{% if unique_names %}
fine_sketches as (

    select * from rebucketed where metric in ({{ unique_names | join(', ') }})

),

merged_sketches as (
    {{ sketch_merge('fine_sketches', key) }}
),

unique_rows as (

    select {{ key | join(', ') }}, metric, {{ sketch_estimate('sketch') }} as value, sketch
    from merged_sketches

),
{% endif %}

final as (

    {% if additive %}
    select {{ rollup_columns(grain) }} from additive_rows
    {% endif %}
    {% if additive and unique_names %}
    union all
    {% endif %}
    {% if unique_names %}
    select {{ rollup_columns(grain) }} from unique_rows
    {% endif %}

)

select * from final
{% endmacro %}

{#-
    A coarser rollup merged from a finer one: additive values summed, sketches merged. Incremental
    runs rebuild the coarse buckets holding any fine bucket rebuilt since the last build.
-#}
{% macro rollup_from_rollups(source_model, grain) %}
{%- set dims = rollup_dimensions() %}
{%- set key = ['tenant_id', 'window_start', 'dimension_set'] + dims %}
{%- set unique_names = catalogue_metrics(['unique']) | map(attribute=0) | list %}
{%- set quoted_uniques = [] %}
{%- for name in unique_names %}{% do quoted_uniques.append(dbt.string_literal(name)) %}{% endfor %}

with

fine_rollups as (

    select * from {{ ref(source_model) }}

),

{% if is_incremental() %}
touched_buckets as (

    select distinct tenant_id, {{ dbt.date_trunc(grain, 'window_start') }} as coarse_start
    from fine_rollups
    where _built_at > {{ last_built_at() }}
        {% if rebuild_point() %}or window_start >= {{ rebuild_point() }}{% endif %}

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
    {% if is_incremental() %}
    inner join touched_buckets
        on fine_rollups.tenant_id = touched_buckets.tenant_id
        and {{ dbt.date_trunc(grain, 'fine_rollups.window_start') }} = touched_buckets.coarse_start
    where fine_rollups.window_start >= (select min(coarse_start) from touched_buckets)
    {% endif %}

),

additive_rows as (

    select {{ key | join(', ') }}, metric, sum(value) as value, cast(null as {{ sketch_type() }}) as sketch
    from rebucketed
    where metric not in ({{ quoted_uniques | join(', ') }})
    group by {{ key | join(', ') }}, metric

),

fine_sketches as (

    select * from rebucketed where metric in ({{ quoted_uniques | join(', ') }})

),

merged_sketches as (
    {{ sketch_merge('fine_sketches', key) }}
),

unique_rows as (

    select {{ key | join(', ') }}, metric, {{ sketch_estimate('sketch') }} as value, sketch
    from merged_sketches

),

final as (

    select {{ rollup_columns(grain) }} from additive_rows
    union all
    select {{ rollup_columns(grain) }} from unique_rows

)

select * from final
{% endmacro %}

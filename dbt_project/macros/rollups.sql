{#-
    The rollup shape: one row per tenant, metric, dimension set and bucket, with the dimension
    columns of the set filled and '*' in the others. Additive metrics carry `value`; unique
    metrics carry a mergeable `sketch` and its estimate in `value`.
-#}

{#- The row key, for incremental merges and the uniqueness test. -#}
{% macro rollup_key() -%}
    {{ return(['tenant_id', 'metric', 'dimension_set'] + rollup_dimensions() + ['window_start']) }}
{%- endmacro %}

{#- DuckDB replaces rebuilt rows with delete+insert; BigQuery merges on the key. -#}
{% macro rollup_strategy() -%}
    {{ return(adapter.dispatch('rollup_strategy', 'analytics')()) }}
{%- endmacro %}

{% macro default__rollup_strategy() %}{{ return('merge') }}{% endmacro %}

{% macro duckdb__rollup_strategy() %}{{ return('delete+insert') }}{% endmacro %}

{#- Staging appends on DuckDB (new Kafka offsets only); BigQuery has no append strategy. -#}
{% macro staging_strategy() -%}
    {{ return(adapter.dispatch('staging_strategy', 'analytics')()) }}
{%- endmacro %}

{% macro default__staging_strategy() %}{{ return('merge') }}{% endmacro %}

{% macro duckdb__staging_strategy() %}{{ return('append') }}{% endmacro %}

{% macro double_type() -%}
    {{ return(adapter.dispatch('double_type', 'analytics')()) }}
{%- endmacro %}

{% macro default__double_type() %}float64{% endmacro %}

{% macro duckdb__double_type() %}double{% endmacro %}

{#- Time of the last build of this model, or the epoch before the first. -#}
{% macro last_built_at() -%}
    (select coalesce(max(_built_at), {{ utc_timestamp('1970-01-01 00:00:00+00:00') }}) from {{ this }})
{%- endmacro %}

{#- GROUP BY clause over the given dimension sets, each with the `keys` columns in front. -#}
{% macro grouping_sets(keys, dimension_sets) -%}
    group by grouping sets (
    {%- for dimension_set in dimension_sets %}
        ({{ (keys + dimension_set) | join(', ') }}){{ ',' if not loop.last }}
    {%- endfor %}
    )
{%- endmacro %}

{#- Select columns of a grouping-sets query: the set's name and '*' for dimensions not grouped. -#}
{% macro dimension_set_columns(dimension_sets) -%}
    {%- set grouped = [] -%}
    {%- for dim in rollup_dimensions() -%}
        {%- for dimension_set in dimension_sets if dim in dimension_set and dim not in grouped -%}
            {%- do grouped.append(dim) -%}
        {%- endfor -%}
    {%- endfor -%}
    case
    {%- for dimension_set in dimension_sets %}
        when {% for dim in grouped %}grouping({{ dim }}) = {{ 0 if dim in dimension_set else 1 }}{{ ' and ' if not loop.last }}{% endfor %}{{ 'true' if not grouped }}
            then '{{ dimension_set_name(dimension_set) }}'
    {%- endfor %}
    end as dimension_set,
    {%- for dim in rollup_dimensions() %}
    {{ "coalesce(" ~ dim ~ ", '*')" if dim in grouped else "'*'" }} as {{ dim }}{{ ',' if not loop.last }}
    {%- endfor %}
{%- endmacro %}

{#- The names of the rollup columns, in table order (inserts of a history rebuild name them). -#}
{% macro rollup_column_names() -%}
    {{ return(
        ['tenant_id', 'metric', 'dimension_set'] + rollup_dimensions()
        + ['granularity', 'window_start', 'window_end', 'value', 'sketch', '_built_at']
    ) }}
{%- endmacro %}

{#- The final columns, shared by every grain (rollup_column_names lists them). -#}
{% macro rollup_columns(grain) -%}
    tenant_id,
    metric,
    dimension_set,
    {%- for dim in rollup_dimensions() %}
    {{ dim }},
    {%- endfor %}
    '{{ grain }}' as granularity,
    window_start,
    {{ shift_timestamp('window_start', 1, grain) }} as window_end,
    cast(value as {{ double_type() }}) as value,
    sketch,
    {{ run_timestamp() }} as _built_at
{%- endmacro %}

{#-
    Mergeable unique-user sketches, one per rollup row of a unique metric.

    BigQuery: HLL_COUNT sketches (BYTES, precision `hll_precision`). DuckDB: analytics_core/hll.py's
    format as a BLOB (`Sketch.to_bytes()`): the sorted distinct 64-bit hash() of the user keys while
    there are at most 8,192 (exact), else 2^16 HyperLogLog registers (standard error 0.41 %). The
    DuckDB functions hll_sketch, hll_merge and hll_estimate are analytics_core/sketches.py's,
    registered on dbt's connection by the dbt-duckdb plugin in profiles.yml. Merging is a set
    union, so any set of buckets and dimension values can be combined, and any split of a set
    merges to the sketch of the whole, bit for bit.
-#}

{% macro sketch_type() -%}
    {{ return(adapter.dispatch('sketch_type', 'analytics')()) }}
{%- endmacro %}

{% macro default__sketch_type() %}bytes{% endmacro %}

{% macro duckdb__sketch_type() %}blob{% endmacro %}

{#-
    One sketch per unique metric, key and dimension set of `relation`: columns `keys`,
    dimension_set, the dimensions ('*' when not in the set), metric, sketch.
    metrics: list of (name, condition SQL).
-#}
{% macro sketch_by_sets(relation, keys, dimension_sets, metrics, user_column) -%}
    {{ return(adapter.dispatch('sketch_by_sets', 'analytics')(relation, keys, dimension_sets, metrics, user_column)) }}
{%- endmacro %}

{% macro default__sketch_by_sets(relation, keys, dimension_sets, metrics, user_column) %}
    {%- for name, condition in metrics %}
    select
        {{ keys | join(', ') }},
        {{ dimension_set_columns(dimension_sets) }},
        '{{ name }}' as metric,
        hll_count.init({{ user_column }}, {{ var('hll_precision') }}) as sketch
    from {{ relation }}
    where {{ user_column }} is not null and {{ condition }}
    {{ grouping_sets(keys, dimension_sets) }}
    {% if not loop.last %}union all{% endif %}
    {%- endfor %}
{% endmacro %}

{#-
    DuckDB: the hashes of each group's user keys, repeats included, handed to hll_sketch in one list
    per group (which deduplicates them). A SELECT DISTINCT per finest group first was slower in total
    on an hour of bench_dbt's 4.2M events (minute and hour grain, two runs each, DuckDB alone on a
    busy 2-core machine: 58 s against 40 s).
-#}
{% macro duckdb__sketch_by_sets(relation, keys, dimension_sets, metrics, user_column) %}
    {%- set dims = rollup_dimensions() %}
    select
        {{ keys | join(', ') }},
        {{ dimension_set_columns(dimension_sets) }},
        metric,
        hll_sketch(list(user_hash)) as sketch
    from (
        {%- for name, condition in metrics %}
        select {{ (keys + dims) | join(', ') }}, '{{ name }}' as metric, hash({{ user_column }}) as user_hash
        from {{ relation }}
        where {{ user_column }} is not null and {{ condition }}
        {% if not loop.last %}union all{% endif %}
        {%- endfor %}
    ) as hashed
    {{ grouping_sets(keys + ['metric'], dimension_sets) }}
{% endmacro %}

{#- Merge the `sketch` column of `relation` per group and metric. -#}
{% macro sketch_merge(relation, group_columns) -%}
    {{ return(adapter.dispatch('sketch_merge', 'analytics')(relation, group_columns)) }}
{%- endmacro %}

{% macro default__sketch_merge(relation, group_columns) %}
    {%- set cols = group_columns | join(', ') %}
    select {{ cols }}, metric, hll_count.merge_partial(sketch) as sketch
    from {{ relation }}
    group by {{ cols }}, metric
{% endmacro %}

{% macro duckdb__sketch_merge(relation, group_columns) %}
    {%- set cols = group_columns | join(', ') %}
    select {{ cols }}, metric, hll_merge(list(sketch)) as sketch
    from {{ relation }}
    group by {{ cols }}, metric
{% endmacro %}

{#- Estimated distinct count of a sketch. -#}
{% macro sketch_estimate(sketch) -%}
    {{ return(adapter.dispatch('sketch_estimate', 'analytics')(sketch)) }}
{%- endmacro %}

{% macro default__sketch_estimate(sketch) %}hll_count.extract({{ sketch }}){% endmacro %}

{#- Exact for a sparse sketch, Ertl's improved raw estimator for a dense one (analytics_core/sketches.py). -#}
{% macro duckdb__sketch_estimate(sketch) %}hll_estimate({{ sketch }}){% endmacro %}

{#-
    Pre-hook of each rollup model, inside its transaction: a table built before the DuckDB sketches
    were BLOBs (INTEGER[] registers, metric_logic_version 1) gets its `sketch` column replaced by an
    empty BLOB one (DuckLake changes a column's type only to a wider number; the old registers
    cannot be read as the new format anyway). Its unique metrics' rows, then without a sketch, are
    deleted and rebuilt over all history by the same build's post-hook, since metric_logic_version 2
    changed every fingerprint (macros/definitions.sql), before the transaction commits.
-#}
{% macro migrate_sketch_column() -%}
    {{ return(adapter.dispatch('migrate_sketch_column', 'analytics')()) }}
{%- endmacro %}

{% macro default__migrate_sketch_column() %}{{ return('') }}{% endmacro %}

{% macro duckdb__migrate_sketch_column() %}
    {%- if not tracks_metric_definitions() or not is_incremental() -%}{{ return('') }}{%- endif -%}
    {%- for column in adapter.get_columns_in_relation(this) if column.name == 'sketch' -%}
        {%- if column.data_type | lower != 'blob' -%}
            {{ log(this.identifier ~ ': sketch column ' ~ column.data_type ~ ' replaced by blob', info=True) }}
            {%- do run_query('alter table ' ~ this ~ ' drop column sketch') -%}
            {%- do run_query('alter table ' ~ this ~ ' add column sketch blob') -%}
        {%- endif -%}
    {%- endfor -%}
    {{ return('') }}
{% endmacro %}

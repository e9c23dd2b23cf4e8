{#-
    Mergeable unique-user sketches (HyperLogLog), one per rollup row of a unique metric.

    BigQuery: HLL_COUNT sketches (BYTES). DuckDB has no exposed sketch type, so a sketch is the
    list of its non-empty registers, each stored as `register_index * 64 + rank`: registers come
    from DuckDB's 64-bit hash() of the user key (top `hll_precision` bits pick the register, the
    rank is the position of the first 1-bit in the rest). Merging is a per-register max, so any
    set of buckets and dimension values can be combined; analytics_core/sketches.py reads them.
-#}

{% macro sketch_type() -%}
    {{ return(adapter.dispatch('sketch_type', 'analytics')()) }}
{%- endmacro %}

{% macro default__sketch_type() %}bytes{% endmacro %}

{% macro duckdb__sketch_type() %}integer[]{% endmacro %}

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

{% macro duckdb__sketch_by_sets(relation, keys, dimension_sets, metrics, user_column) %}
    {%- set rest_bits = 64 - var('hll_precision') %}
    {%- set dims = rollup_dimensions() %}
    select
        {{ (keys + ['dimension_set'] + dims) | join(', ') }},
        metric,
        list(register_index * 64 + register_rank order by register_index) as sketch
    from (
        select
            {{ keys | join(', ') }},
            {{ dimension_set_columns(dimension_sets) }},
            metric,
            register_index,
            max(register_rank) as register_rank
        from (
            select
                {{ (keys + dims) | join(', ') }},
                metric,
                cast(user_hash >> {{ rest_bits }} as integer) as register_index,
                case
                    when rest = 0 then {{ rest_bits + 1 }}
                    -- floor(log2()) is the top bit's position, corrected where rounding pushed it up
                    else {{ rest_bits }} - (floor(log2(rest))::integer
                        - case when (1::ubigint << floor(log2(rest))::integer) > rest then 1 else 0 end)
                end as register_rank
            from (
                select
                    {{ (keys + dims) | join(', ') }},
                    metric,
                    user_hash & ((1::ubigint << {{ rest_bits }}) - 1) as rest,
                    user_hash
                from (
                    {%- for name, condition in metrics %}
                    select {{ (keys + dims) | join(', ') }}, '{{ name }}' as metric, hash({{ user_column }}) as user_hash
                    from {{ relation }}
                    where {{ user_column }} is not null and {{ condition }}
                    {% if not loop.last %}union all{% endif %}
                    {%- endfor %}
                ) as hashed
            ) as split
        ) as ranked
        {{ grouping_sets(keys + ['metric', 'register_index'], dimension_sets) }}
    ) as registers
    group by {{ (keys + ['dimension_set'] + dims) | join(', ') }}, metric
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
    select {{ cols }}, metric, list(register_index * 64 + register_rank order by register_index) as sketch
    from (
        select {{ cols }}, metric, register // 64 as register_index, max(register % 64) as register_rank
        from (select {{ cols }}, metric, unnest(sketch) as register from {{ relation }}) as registers
        group by {{ cols }}, metric, register_index
    ) as merged
    group by {{ cols }}, metric
{% endmacro %}

{#- Estimated distinct count of a sketch. -#}
{% macro sketch_estimate(sketch) -%}
    {{ return(adapter.dispatch('sketch_estimate', 'analytics')(sketch)) }}
{%- endmacro %}

{% macro default__sketch_estimate(sketch) %}hll_count.extract({{ sketch }}){% endmacro %}

{#-
    Ertl's improved raw estimator ("New cardinality estimation algorithms for HyperLogLog
    sketches", 2017): no bias tables, accurate from one user up. sigma(x) = x + sum_k x^(2^k) 2^(k-1)
    is unrolled; terms past k = precision + 10 are below double precision.
-#}
{% macro duckdb__sketch_estimate(sketch) %}
    {%- set m = 2 ** var('hll_precision') %}
    {%- set x = '((' ~ m ~ ' - len(' ~ sketch ~ ')) / ' ~ m ~ '.0)' %}
    (case when {{ sketch }} is null or len({{ sketch }}) = 0 then 0.0 else
        {{ 0.7213475204444817 * m * m }} / (
            {{ m }} * ({{ x }}
                {%- for k in range(1, var('hll_precision') + 11) %} + pow({{ x }}, {{ 2 ** k }}) * {{ 2 ** (k - 1) }}{% endfor %})
            + list_sum(list_transform({{ sketch }}, register -> pow(2.0, -(register % 64))))
        )
    end)
{% endmacro %}

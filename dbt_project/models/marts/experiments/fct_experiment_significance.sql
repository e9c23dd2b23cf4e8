-- The significance table: per tenant, experiment, metric and variant against control, the absolute
-- and relative lift with their intervals and p-values, the Bayesian chance to win and risk, the
-- sample-ratio-mismatch p-value and the verdict (docs/EXPERIMENTS.md has every formula).
-- Each metric's per-variant sums become the JSON document analytics_core/stats/document.py reads
-- (variants in name order, so a sum over them adds in the same order everywhere), and the rows
-- are computed by the code `analytics experiments analyze` runs, on either warehouse:
-- - DuckDB: experiment_rows(document), which the dbt-duckdb plugin registers
--   (analytics_core/dbt_plugin.py), answers the rows already typed;
-- - BigQuery: the Python UDF experiment_analyze(document) (dbt_project/functions/, the stats
--   modules bundled into one file) answers them as a JSON array, read back into the same columns
--   with the same types (experiment_row_columns()). The document is written number by number so
--   that it parses to the same doubles as DuckDB's.
{{ config(materialized='table', tags=['hourly']) }}

{%- set experiments = experiment_definitions() %}
{%- set metrics = experiment_metrics(experiments) %}

with

{% if metrics %}
    settings as (

        {% for m in metrics %}
            {%- set e = (experiments | selectattr('key', 'equalto', m.experiment) | first) %}
            select
                '{{ m.experiment }}' as experiment_key,
                '{{ m.name }}' as metric,
                '{{ e.control }}' as control,
                {{ e.alpha | float }} as alpha,
                {{ 'true' if e.sequential else 'false' }} as sequential,
                {{ 'true' if m.higher_is_better else 'false' }} as higher_is_better,
                {{ 'true' if m.cuped else 'false' }} as cuped,
                {{ 'true' if m.name == e.primary else 'false' }} as is_primary
            {% if not loop.last %}union all{% endif %}
        {% endfor %}

    ),

    {% if target.type == 'bigquery' %}
        stats as (

            select
                variant_stats.tenant_id,
                variant_stats.experiment_key,
                variant_stats.metric,
                variant_stats.kind,
                variant_stats.variant,
                variant_stats.planned_share,
                concat(
                    '{"users":', {{ bigquery_json_integer('variant_stats.users') }},
                    if(
                        variant_stats.kind = 'conversion',
                        concat(',"conversions":', {{ bigquery_json_integer('variant_stats.value_sum') }}),
                        concat(
                            ',"sum":', {{ bigquery_json_float('variant_stats.value_sum') }},
                            ',"sum_squares":', {{ bigquery_json_float('variant_stats.value_sum_squares') }}
                        )
                    ),
                    case
                        when settings.cuped and variant_stats.kind = 'conversion'
                            then concat(
                                ',"pre_sum":', {{ bigquery_json_integer('coalesce(variant_stats.pre_sum, 0)') }},
                                ',"sum_products":', {{ bigquery_json_integer('coalesce(variant_stats.sum_products, 0)') }}
                            )
                        when settings.cuped
                            then concat(
                                ',"pre_sum":', {{ bigquery_json_float('coalesce(variant_stats.pre_sum, 0)') }},
                                ',"pre_sum_squares":', {{ bigquery_json_float('coalesce(variant_stats.pre_sum_squares, 0)') }},
                                ',"sum_products":', {{ bigquery_json_float('coalesce(variant_stats.sum_products, 0)') }}
                            )
                        else ''
                    end,
                    '}'
                ) as variant_document
            from {{ ref('fct_experiment_variant_stats') }} as variant_stats
            inner join settings
                on
                    variant_stats.experiment_key = settings.experiment_key
                    and variant_stats.metric = settings.metric

        ),

        documents as (

            select
                stats.tenant_id,
                stats.experiment_key,
                stats.metric,
                settings.is_primary,
                concat(
                    '{"metric":', to_json_string(stats.metric),
                    ',"kind":', to_json_string(any_value(stats.kind)),
                    ',"control":', to_json_string(any_value(settings.control)),
                    ',"split":{',
                    string_agg(
                        concat(to_json_string(stats.variant), ':', {{ bigquery_json_float('stats.planned_share') }}),
                        ',' order by stats.variant
                    ),
                    '},"alpha":', {{ bigquery_json_float('any_value(settings.alpha)') }},
                    ',"sequential":', to_json_string(any_value(settings.sequential)),
                    ',"higher_is_better":', to_json_string(any_value(settings.higher_is_better)),
                    ',"variants":{',
                    string_agg(concat(to_json_string(stats.variant), ':', stats.variant_document), ',' order by stats.variant),
                    '}}'
                ) as document
            from stats
            inner join settings
                on
                    stats.experiment_key = settings.experiment_key
                    and stats.metric = settings.metric
            group by stats.tenant_id, stats.experiment_key, stats.metric, settings.is_primary

        ),

        analysed as (

            select
                documents.tenant_id,
                documents.experiment_key,
                documents.is_primary,
                {%- for name, type in experiment_row_columns() %}
                    safe_cast(json_value(analysed_row, '$.{{ name }}') as {{ type }}) as {{ name }}
                    {{- ',' if not loop.last }}
                {%- endfor %}
            from documents
            cross join
                unnest(json_query_array({{ function('experiment_analyze') }}(documents.document))) as analysed_row

        )
    {% else %}
        stats as (

            select
                variant_stats.tenant_id,
                variant_stats.experiment_key,
                variant_stats.metric,
                variant_stats.kind,
                variant_stats.variant,
                variant_stats.planned_share,
                settings.cuped,
                case
                    when variant_stats.kind = 'conversion' and settings.cuped
                        then json_object(
                            'users', variant_stats.users,
                            'conversions', cast(variant_stats.value_sum as bigint),
                            'pre_sum', cast(coalesce(variant_stats.pre_sum, 0) as bigint),
                            'sum_products', cast(coalesce(variant_stats.sum_products, 0) as bigint)
                        )
                    when variant_stats.kind = 'conversion'
                        then json_object(
                            'users', variant_stats.users,
                            'conversions', cast(variant_stats.value_sum as bigint)
                        )
                    when settings.cuped
                        then json_object(
                            'users', variant_stats.users,
                            'sum', variant_stats.value_sum,
                            'sum_squares', variant_stats.value_sum_squares,
                            'pre_sum', coalesce(variant_stats.pre_sum, 0),
                            'pre_sum_squares', coalesce(variant_stats.pre_sum_squares, 0),
                            'sum_products', coalesce(variant_stats.sum_products, 0)
                        )
                    else json_object(
                        'users', variant_stats.users,
                        'sum', variant_stats.value_sum,
                        'sum_squares', variant_stats.value_sum_squares
                    )
                end as variant_document
            from {{ ref('fct_experiment_variant_stats') }} as variant_stats
            inner join settings
                on
                    variant_stats.experiment_key = settings.experiment_key
                    and variant_stats.metric = settings.metric

        ),

        documents as (

            select
                stats.tenant_id,
                stats.experiment_key,
                stats.metric,
                settings.is_primary,
                json_object(
                    'metric', stats.metric,
                    'kind', any_value(stats.kind),
                    'control', any_value(settings.control),
                    'split', {{ duckdb_json_group_object_sorted('stats.variant', 'stats.planned_share') }},
                    'alpha', any_value(settings.alpha),
                    'sequential', any_value(settings.sequential),
                    'higher_is_better', any_value(settings.higher_is_better),
                    'variants', {{ duckdb_json_group_object_sorted('stats.variant', 'stats.variant_document') }}
                ) as document
            from stats
            inner join settings
                on
                    stats.experiment_key = settings.experiment_key
                    and stats.metric = settings.metric
            group by stats.tenant_id, stats.experiment_key, stats.metric, settings.is_primary

        ),

        analysed as (

            select
                tenant_id,
                experiment_key,
                is_primary,
                unnest(experiment_rows(document), recursive := true)  -- noqa: AL03
            from documents

        )
    {% endif %}

    select
        tenant_id,
        experiment_key,
        is_primary,
        metric,
        kind,
        variant,
        control,
        control_users,
        variant_users,
        control_mean,
        variant_mean,
        absolute_lift,
        absolute_ci_low,
        absolute_ci_high,
        absolute_p_value,
        relative_lift,
        relative_ci_low,
        relative_ci_high,
        relative_p_value,
        chance_to_win,
        risk_control,
        risk_variant,
        srm_p_value,
        verdict,
        cannot_compute,
        cuped,
        sequential,
        alpha,
        {{ run_timestamp() }} as _built_at
    from analysed
{% else %}
    final as (

        select
            cast(null as {{ experiment_sql_types().text }}) as tenant_id,
            cast(null as {{ experiment_sql_types().text }}) as experiment_key,
            cast(null as {{ experiment_sql_types().flag }}) as is_primary,
            {%- for name, type in experiment_row_columns() %}
                cast(null as {{ type }}) as {{ name }},
            {%- endfor %}
            {{ run_timestamp() }} as _built_at

    )

    select * from final
    where false
{% endif %}

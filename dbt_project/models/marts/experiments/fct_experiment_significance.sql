-- The significance table: per tenant, experiment, metric and variant against control, the absolute
-- and relative lift with their intervals and p-values, the Bayesian chance to win and risk, the
-- sample-ratio-mismatch p-value and the verdict (docs/EXPERIMENTS.md has every formula).
-- Each metric's per-variant sums become the JSON document analytics_core/stats/experiments.py
-- reads, and experiment_rows() (the dbt-duckdb plugin registers it: analytics_core/dbt_plugin.py)
-- computes the rows with the same code as `analytics experiments analyze`.
-- DuckDB only for now: BigQuery has no such function yet, so the model is disabled there.
{{ config(materialized='table', tags=['hourly'], enabled=(target.type == 'duckdb')) }}

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
                'split', json_group_object(stats.variant, stats.planned_share),
                'alpha', any_value(settings.alpha),
                'sequential', any_value(settings.sequential),
                'higher_is_better', any_value(settings.higher_is_better),
                'variants', json_group_object(stats.variant, stats.variant_document)
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

    select
        tenant_id,
        experiment_key,
        metric,
        is_primary,
        variant,
        control,
        kind,
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
            cast(null as varchar) as tenant_id,
            cast(null as varchar) as experiment_key,
            cast(null as varchar) as metric,
            cast(null as varchar) as variant,
            cast(null as varchar) as verdict,
            {{ run_timestamp() }} as _built_at

    )

    select * from final
    where false
{% endif %}

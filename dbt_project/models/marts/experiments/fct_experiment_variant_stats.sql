-- The sufficient statistics of each experiment, metric and variant, from which every test of
-- fct_experiment_significance is computed (and which `analytics experiments analyze` reads):
-- users, the sum and sum of squares of the per-user values (for a conversion metric the sum is the
-- conversions), and for CUPED metrics the pre-exposure sums and the cross products. Every variant
-- of the definition has a row, with 0 users when none was exposed (a sample-ratio check needs it).
-- A table rebuilt whole each run: it reads fct_experiment_user_metrics (a row per analysed user and
-- metric, kept current incrementally), never the events, so its cost follows the users, not the span.
{{ config(materialized='table', tags=['hourly']) }}

{%- set experiments = experiment_definitions() %}
{%- set metrics = experiment_metrics(experiments) %}
{%- set plan = [] %}
{%- for m in metrics %}
    {%- for v in m.variants | sort %}{% do plan.append(dict(m, variant=v)) %}{% endfor %}
{%- endfor %}

with

{% if metrics %}
    planned as (

        {% for p in plan %}
            select
                '{{ p.experiment }}' as experiment_key,
                '{{ p.name }}' as metric,
                '{{ p.kind }}' as kind,
                '{{ p.variant }}' as variant,
                {{ p.variants[p.variant] | float }} as planned_share,
                {{ 'true' if p.variant == p.control else 'false' }} as is_control
            {% if not loop.last %}union all{% endif %}
        {% endfor %}

    ),

    tenants as (

        select distinct
            tenant_id,
            experiment_key
        from {{ ref('fct_experiment_exposures') }}

    ),

    sums as (

        select
            tenant_id,
            experiment_key,
            metric,
            variant,
            count(*) as users,
            sum(value) as value_sum,
            sum(value * value) as value_sum_squares,
            sum(pre_value) as pre_sum,
            sum(pre_value * pre_value) as pre_sum_squares,
            sum(value * pre_value) as sum_products
        from {{ ref('fct_experiment_user_metrics') }}
        group by tenant_id, experiment_key, metric, variant

    )

    select
        tenants.tenant_id,
        planned.experiment_key,
        planned.metric,
        planned.kind,
        planned.variant,
        planned.is_control,
        planned.planned_share,
        coalesce(sums.users, 0) as users,
        coalesce(sums.value_sum, 0) as value_sum,
        coalesce(sums.value_sum_squares, 0) as value_sum_squares,
        sums.pre_sum,
        sums.pre_sum_squares,
        sums.sum_products,
        {{ run_timestamp() }} as _built_at
    from tenants
    inner join planned on tenants.experiment_key = planned.experiment_key
    left join sums
        on
            tenants.tenant_id = sums.tenant_id
            and planned.experiment_key = sums.experiment_key
            and planned.metric = sums.metric
            and planned.variant = sums.variant
{% else %}
final as (

    select
        cast(null as {{ dbt.type_string() }}) as tenant_id,
        cast(null as {{ dbt.type_string() }}) as experiment_key,
        cast(null as {{ dbt.type_string() }}) as metric,
        cast(null as {{ dbt.type_string() }}) as kind,
        cast(null as {{ dbt.type_string() }}) as variant,
        cast(null as boolean) as is_control,
        cast(null as {{ double_type() }}) as planned_share,
        cast(null as {{ dbt.type_bigint() }}) as users,
        cast(null as {{ double_type() }}) as value_sum,
        cast(null as {{ double_type() }}) as value_sum_squares,
        cast(null as {{ double_type() }}) as pre_sum,
        cast(null as {{ double_type() }}) as pre_sum_squares,
        cast(null as {{ double_type() }}) as sum_products,
        {{ run_timestamp() }} as _built_at

)

select * from final
where false
{% endif %}

-- Each exposed user's value of each metric of the experiment (users excluded by
-- fct_experiment_exposures left out): `value`, from the events in [first exposure, first exposure
-- + within] (an event exactly at the end counts), and `pre_value`, the same metric over
-- [first exposure - within, first exposure), the covariate of CUPED (null for metrics without it).
-- A conversion metric is 1 when the user did the event in the span, else 0; a continuous one is the
-- sum of the event's value column (revenue) in the span, 0 when there is none. Users whose span has
-- not ended yet count with what they have done so far (`span_complete` says which).
{{ config(materialized='table', tags=['hourly']) }}

{%- set experiments = experiment_definitions() %}
{%- set metrics = experiment_metrics(experiments) %}

with

{% if metrics %}
    exposures as (

        select
            tenant_id,
            experiment_key,
            user_key,
            variant,
            first_exposed_at
        from {{ ref('fct_experiment_exposures') }}
        where not excluded

    ),

    metrics as (

        {% for m in metrics %}
            select
                '{{ m.experiment }}' as experiment_key,
                '{{ m.name }}' as metric,
                '{{ m.kind }}' as kind,
                {{ m.within }} as within_s,
                {{ 'true' if m.cuped else 'false' }} as cuped
            {% if not loop.last %}union all{% endif %}
        {% endfor %}

    ),

    metric_events as (

        {% for m in metrics %}
            select
                '{{ m.experiment }}' as experiment_key,
                '{{ m.name }}' as metric,
                tenant_id,
                user_key,
                event_at,
                {% if m.kind == 'continuous' %}coalesce({{ m.value }}, 0){% else %}1{% endif %} as amount
            from {{ ref('stg_tracking__events') }}
            where
                not is_bot
                and user_key is not null
                and event_type = {{ sql_string(m.event_type) }}
                and {{ where_matches(m.where) }}
            {% if not loop.last %}union all{% endif %}
        {% endfor %}

    ),

    spans as (

        select
            exposures.tenant_id,
            exposures.experiment_key,
            metrics.metric,
            metrics.kind,
            metrics.cuped,
            exposures.user_key,
            exposures.variant,
            exposures.first_exposed_at,
            {{ shift_timestamp('exposures.first_exposed_at', 'metrics.within_s', 'second') }} as span_end,
            {{ shift_timestamp('exposures.first_exposed_at', '-metrics.within_s', 'second') }} as pre_start
        from exposures
        inner join metrics on exposures.experiment_key = metrics.experiment_key

    ),

    per_user as (

        select
            spans.tenant_id,
            spans.experiment_key,
            spans.metric,
            spans.user_key,
            spans.kind,
            spans.cuped,
            spans.variant,
            spans.first_exposed_at,
            spans.span_end,
            count(case when metric_events.event_at >= spans.first_exposed_at then 1 end) as events_after,
            coalesce(sum(
                case when metric_events.event_at >= spans.first_exposed_at then metric_events.amount end
            ), 0) as amount_after,
            count(case when metric_events.event_at < spans.first_exposed_at then 1 end) as events_before,
            coalesce(sum(
                case when metric_events.event_at < spans.first_exposed_at then metric_events.amount end
            ), 0) as amount_before
        from spans
        left join metric_events
            on
                spans.tenant_id = metric_events.tenant_id
                and spans.experiment_key = metric_events.experiment_key
                and spans.metric = metric_events.metric
                and spans.user_key = metric_events.user_key
                and spans.pre_start <= metric_events.event_at
                and spans.span_end >= metric_events.event_at
        group by
            spans.tenant_id, spans.experiment_key, spans.metric, spans.user_key, spans.kind, spans.cuped,
            spans.variant, spans.first_exposed_at, spans.span_end

    )

    select
        tenant_id,
        experiment_key,
        metric,
        user_key,
        variant,
        first_exposed_at,
        cast(case
            when kind = 'conversion' then (case when events_after > 0 then 1 else 0 end)
            else amount_after
        end as {{ double_type() }}) as value,
        case when cuped then cast(case
            when kind = 'conversion' then (case when events_before > 0 then 1 else 0 end)
            else amount_before
        end as {{ double_type() }}) end as pre_value,
        span_end <= {{ run_timestamp() }} as span_complete,
        {{ run_timestamp() }} as _built_at
    from per_user
{% else %}
final as (

    select
        cast(null as {{ dbt.type_string() }}) as tenant_id,
        cast(null as {{ dbt.type_string() }}) as experiment_key,
        cast(null as {{ dbt.type_string() }}) as metric,
        cast(null as {{ dbt.type_string() }}) as user_key,
        cast(null as {{ dbt.type_string() }}) as variant,
        cast(null as {{ timestamp_type() }}) as first_exposed_at,
        cast(null as {{ double_type() }}) as value,
        cast(null as {{ double_type() }}) as pre_value,
        cast(null as boolean) as span_complete,
        {{ run_timestamp() }} as _built_at

)

select * from final
where false
{% endif %}

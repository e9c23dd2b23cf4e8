-- Each exposed user's value of each metric of the experiment (users excluded by
-- fct_experiment_exposures left out): `value`, from the events in [first exposure, first exposure
-- + within] (an event exactly at the end counts), and `pre_value`, the same metric over
-- [first exposure - within, first exposure), the covariate of CUPED (null for metrics without it).
-- A conversion metric is 1 when the user did the event in the span, else 0; a continuous one is the
-- sum of the event's value column (revenue) in the span, 0 when there is none. Users whose span has
-- not ended yet count with what they have done so far (`span_complete` says which).
-- Incremental: the pre-hook (macros/experiments.sql) deletes the rows of users whose exposure row
-- no longer matches (another first exposure or variant, excluded, gone), of experiments whose
-- definition changed or that are no longer defined, and on a replay (`rebuild_from`) those whose
-- span reaches it. A run then counts the analysed users without rows from all their events in
-- their spans, and adds to the other rows the metric events staged since the last build that fall
-- in their spans (late ones included, whatever their time), re-stamping `span_complete` of the
-- rows whose span ended since.
{{ config(
    materialized='incremental',
    incremental_strategy=rollup_strategy(),
    unique_key=['tenant_id', 'experiment_key', 'metric', 'user_key'],
    tags=['hourly'],
    pre_hook="{{ delete_experiment_rows('user_metrics') }}",
) }}

{%- set experiments = experiment_definitions() | selectattr('metrics') | list %}
{%- set metrics = experiment_metrics(experiments) %}
{%- set state = experiment_table_state(experiments, 'user_metrics') %}

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
            {%- set e = (experiments | selectattr('key', 'equalto', m.experiment) | first) %}
            select
                '{{ m.experiment }}' as experiment_key,
                '{{ m.name }}' as metric,
                '{{ m.kind }}' as kind,
                {{ m.within }} as within_s,
                {{ 'true' if m.cuped else 'false' }} as cuped,
                '{{ experiment_definition_hash(e, "user_metrics") }}' as definition_hash
            {% if not loop.last %}union all{% endif %}
        {% endfor %}

    ),

    -- The analysed users to count from all their events: every one on a first build; else those
    -- without rows (new, or whose rows the pre-hook deleted).
    spans as (

        select
            exposures.tenant_id,
            exposures.experiment_key,
            metrics.metric,
            metrics.kind,
            metrics.cuped,
            metrics.definition_hash,
            exposures.user_key,
            exposures.variant,
            exposures.first_exposed_at,
            {{ shift_timestamp('exposures.first_exposed_at', 'metrics.within_s', 'second') }} as span_end,
            {{ shift_timestamp('exposures.first_exposed_at', '-metrics.within_s', 'second') }} as pre_start
        from exposures
        inner join metrics on exposures.experiment_key = metrics.experiment_key
        {% if is_incremental() %}
            left join {{ this }} as built
                on
                    exposures.tenant_id = built.tenant_id
                    and exposures.experiment_key = built.experiment_key
                    and metrics.metric = built.metric
                    and exposures.user_key = built.user_key
            where built.user_key is null
        {% endif %}

    ),

    -- Every (experiment, metric) event of a human, with its amount (1 for a conversion): from the
    -- earliest span of the users counted whole (`window_events`), and the ones staged since the
    -- last build (`fresh_events`, on incremental runs).
    {% for part in (['window', 'fresh'] if is_incremental() else ['window']) %}
        {{ part }}_events as (

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
                    and {{ event_type_in([m.event_type], sql_string, m.get('purchases')) }}
                    and {{ where_matches(m.where) }}
                    {% if part == 'window' %}
                        and event_at >= (select min(spans.pre_start) from spans)
                        and event_at <= (select max(spans.span_end) from spans)
                    {% elif state.kept %}
                        and _staged_at > {{ state.built_at }}
                    {% else %}
                        and false
                    {% endif %}
                {% if not loop.last %}union all{% endif %}
            {% endfor %}

        ),
    {% endfor %}

    counted as (

        select
            spans.tenant_id,
            spans.experiment_key,
            spans.metric,
            spans.user_key,
            spans.kind,
            spans.cuped,
            spans.definition_hash,
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
        left join window_events as metric_events
            on
                spans.tenant_id = metric_events.tenant_id
                and spans.experiment_key = metric_events.experiment_key
                and spans.metric = metric_events.metric
                and spans.user_key = metric_events.user_key
                and spans.pre_start <= metric_events.event_at
                and spans.span_end >= metric_events.event_at
        group by
            spans.tenant_id, spans.experiment_key, spans.metric, spans.user_key, spans.kind, spans.cuped,
            spans.definition_hash, spans.variant, spans.first_exposed_at, spans.span_end

    ),

    counted_rows as (

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
            {{ run_timestamp() }} as _built_at,
            definition_hash
        from counted

    )

    {% if is_incremental() %}
        ,

        -- The rows kept (their experiment's definition unchanged) that events staged since the last
        -- build fall in the spans of: those events are added to them.
        added as (

            select
                built.tenant_id,
                built.experiment_key,
                built.metric,
                built.user_key,
                built.variant,
                built.first_exposed_at,
                built.value,
                built.pre_value,
                built.span_complete,
                metrics.kind,
                metrics.cuped,
                metrics.definition_hash,
                {{ shift_timestamp('built.first_exposed_at', 'metrics.within_s', 'second') }} as span_end,
                count(case when fresh.event_at >= built.first_exposed_at then 1 end) as events_after,
                coalesce(sum(
                    case when fresh.event_at >= built.first_exposed_at then fresh.amount end
                ), 0) as amount_after,
                count(case when fresh.event_at < built.first_exposed_at then 1 end) as events_before,
                coalesce(sum(
                    case when fresh.event_at < built.first_exposed_at then fresh.amount end
                ), 0) as amount_before
            from {{ this }} as built
            inner join metrics
                on
                    built.experiment_key = metrics.experiment_key
                    and built.metric = metrics.metric
            inner join fresh_events as fresh
                on
                    built.tenant_id = fresh.tenant_id
                    and built.experiment_key = fresh.experiment_key
                    and built.metric = fresh.metric
                    and built.user_key = fresh.user_key
                    and {{ shift_timestamp('built.first_exposed_at', '-metrics.within_s', 'second') }} <= fresh.event_at
                    and {{ shift_timestamp('built.first_exposed_at', 'metrics.within_s', 'second') }} >= fresh.event_at
            where {{ experiment_in(state.kept, 'built.experiment_key') }}
            group by
                built.tenant_id, built.experiment_key, built.metric, built.user_key, built.variant,
                built.first_exposed_at, built.value, built.pre_value, built.span_complete, metrics.kind,
                metrics.cuped, metrics.definition_hash, metrics.within_s

        ),

        -- The other rows kept whose span ended since the last build: only `span_complete` changes.
        closed as (

            select
                built.tenant_id,
                built.experiment_key,
                built.metric,
                built.user_key,
                built.variant,
                built.first_exposed_at,
                built.value,
                built.pre_value,
                built.span_complete,
                metrics.kind,
                metrics.cuped,
                metrics.definition_hash,
                {{ shift_timestamp('built.first_exposed_at', 'metrics.within_s', 'second') }} as span_end,
                0 as events_after,
                0 as amount_after,
                0 as events_before,
                0 as amount_before
            from {{ this }} as built
            inner join metrics
                on
                    built.experiment_key = metrics.experiment_key
                    and built.metric = metrics.metric
            left join added
                on
                    built.tenant_id = added.tenant_id
                    and built.experiment_key = added.experiment_key
                    and built.metric = added.metric
                    and built.user_key = added.user_key
            where
                {{ experiment_in(state.kept, 'built.experiment_key') }}
                and not built.span_complete
                and {{ shift_timestamp('built.first_exposed_at', 'metrics.within_s', 'second') }} <= {{ run_timestamp() }}
                and added.user_key is null

        ),

        added_rows as (

            select
                tenant_id,
                experiment_key,
                metric,
                user_key,
                variant,
                first_exposed_at,
                cast(case
                    when kind = 'conversion' then (case when value > 0 or events_after > 0 then 1 else 0 end)
                    else value + amount_after
                end as {{ double_type() }}) as value,
                case when cuped then cast(case
                    when kind = 'conversion' then (case when pre_value > 0 or events_before > 0 then 1 else 0 end)
                    else pre_value + amount_before
                end as {{ double_type() }}) end as pre_value,
                span_end <= {{ run_timestamp() }} as span_complete,
                {{ run_timestamp() }} as _built_at,
                definition_hash
            from (
                select * from added
                union all
                select * from closed
            ) as updated

        )

        select * from counted_rows
        union all
        select * from added_rows
    {% else %}
        select * from counted_rows
    {% endif %}
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
        {{ run_timestamp() }} as _built_at,
        cast(null as {{ dbt.type_string() }}) as definition_hash

)

select * from final
where false
{% endif %}

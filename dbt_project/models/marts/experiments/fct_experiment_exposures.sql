-- First exposure of each user to each defined experiment (vars `experiments` in dbt_project.yml):
-- an event carrying the experiment's key and a variant, by a human, between the experiment's start
-- and end. A user seen in two variants, or in a variant the definition does not list, is excluded
-- from the analysis and kept here with `excluded_reason`, so the exclusions can be counted.
-- A table: exposures change as late events arrive, and a run reads only the tagged events.
{{ config(materialized='table', tags=['hourly']) }}

{%- set experiments = experiment_definitions() %}

with

{% if experiments %}
    defined as (

        {% for e in experiments %}
            select
                '{{ e.key }}' as experiment_key,
                {{ iso_timestamp(e.start) }} as starts_at,
                {% if e.end %}{{ iso_timestamp(e.end) }}{% else %}cast(null as {{ timestamp_type() }}){% endif %}
                    as ends_at
            {% if not loop.last %}union all{% endif %}
        {% endfor %}

    ),

    tagged as (

        select
            events.tenant_id,
            events.experiment_key,
            events.user_key,
            events.experiment_variant,
            events.event_at
        from {{ ref('stg_tracking__events') }} as events
        inner join defined on events.experiment_key = defined.experiment_key
        where
            not events.is_bot
            and events.user_key is not null
            and events.experiment_variant is not null
            and events.event_at >= defined.starts_at
            and (defined.ends_at is null or events.event_at < defined.ends_at)

    ),

    per_user as (

        select
            tenant_id,
            experiment_key,
            user_key,
            min(event_at) as first_exposed_at,
            count(distinct experiment_variant) as variants_seen,
            min(experiment_variant) as first_variant
        from tagged
        group by tenant_id, experiment_key, user_key

    ),

    final as (

        select
            tenant_id,
            experiment_key,
            user_key,
            first_exposed_at,
            variants_seen,
            case when variants_seen = 1 then first_variant end as variant,
            case
                when variants_seen > 1 then 'several variants'
                {% for e in experiments %}
                    when
                        experiment_key = '{{ e.key }}'
                        and first_variant not in ({{ sql_strings(e.variants | sort) }})
                        then 'variant not in the definition'
                {% endfor %}
            end as excluded_reason,
            {{ run_timestamp() }} as _built_at
        from per_user

    )

    select
        *,
        excluded_reason is not null as excluded
    from final
{% else %}
final as (

    select
        cast(null as {{ dbt.type_string() }}) as tenant_id,
        cast(null as {{ dbt.type_string() }}) as experiment_key,
        cast(null as {{ dbt.type_string() }}) as user_key,
        cast(null as {{ timestamp_type() }}) as first_exposed_at,
        cast(null as {{ dbt.type_bigint() }}) as variants_seen,
        cast(null as {{ dbt.type_string() }}) as variant,
        cast(null as {{ dbt.type_string() }}) as excluded_reason,
        {{ run_timestamp() }} as _built_at,
        cast(null as boolean) as excluded

)

select * from final
where false
{% endif %}

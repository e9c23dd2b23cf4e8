-- First exposure of each user to each defined experiment (vars `experiments` in dbt_project.yml):
-- an event carrying the experiment's key and a variant, by a human, between the experiment's start
-- and end. A user seen in two variants, or in a variant the definition does not list, is excluded
-- from the analysis and kept here with `excluded_reason`, so the exclusions can be counted.
-- Incremental: a run reads only the tagged events staged since the table's last build (late ones
-- included, whatever their time) and merges them into the rows of their users: the first exposure
-- is the earlier of the two, the variants seen (`variants`) the union. An experiment whose start,
-- end or variants changed (`definition_hash`), or that has no rows yet, is built whole from all its
-- tagged events, as is every experiment on a replay (`rebuild_from`); one no longer defined is
-- deleted (the pre-hook, macros/experiments.sql).
{{ config(
    materialized='incremental',
    incremental_strategy=rollup_strategy(),
    unique_key=['tenant_id', 'experiment_key', 'user_key'],
    tags=['hourly'],
    pre_hook="{{ delete_experiment_rows('exposures') }}",
) }}

{%- set experiments = experiment_definitions() %}
{%- set state = experiment_table_state(experiments, 'exposures') %}
{#- The tagged events to read: all of an experiment built whole, those staged since the last build of the others. #}
{%- set fresh = experiment_in(state.rebuild, 'events.experiment_key') %}
{%- if state.kept %}
    {%- set fresh = '(' ~ fresh ~ ' or (' ~ experiment_in(state.kept, 'events.experiment_key')
        ~ ' and events._staged_at > ' ~ state.built_at ~ '))' %}
{%- endif %}

with

{% if experiments %}
    defined as (

        {% for e in experiments %}
            select
                '{{ e.key }}' as experiment_key,
                {{ iso_timestamp(e.start) }} as starts_at,
                {% if e.end %}{{ iso_timestamp(e.end) }}{% else %}cast(null as {{ timestamp_type() }}){% endif %}
                    as ends_at,
                '{{ experiment_definition_hash(e, "exposures") }}' as definition_hash
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
        {% if is_incremental() %}
            and {{ fresh }}
        {% endif %}

    ),

    {% if is_incremental() %}
        -- The rows already built of the users with new tagged events, as one exposure at their first
        -- exposure time in each variant they were seen in (the rows of experiments rebuilt whole are
        -- gone: the pre-hook deleted them).
        touched as (

            select distinct
                tenant_id,
                experiment_key,
                user_key
            from tagged

        ),

        known as (

            select
                built.tenant_id,
                built.experiment_key,
                built.user_key,
                seen_variant as experiment_variant,
                built.first_exposed_at as event_at
            from {{ this }} as built
            inner join touched
                on
                    built.tenant_id = touched.tenant_id
                    and built.experiment_key = touched.experiment_key
                    and built.user_key = touched.user_key
            {{ unnest_join('built.variants', 'seen_variant') }}

        ),
    {% endif %}

    exposed as (

        select * from tagged
        {% if is_incremental() %}
            union all
            select * from known
        {% endif %}

    ),

    per_user as (

        select
            exposed.tenant_id,
            exposed.experiment_key,
            exposed.user_key,
            min(exposed.event_at) as first_exposed_at,
            count(distinct exposed.experiment_variant) as variants_seen,
            min(exposed.experiment_variant) as first_variant,
            array_agg(distinct exposed.experiment_variant order by exposed.experiment_variant) as variants
        from exposed
        group by exposed.tenant_id, exposed.experiment_key, exposed.user_key

    ),

    final as (

        select
            per_user.tenant_id,
            per_user.experiment_key,
            per_user.user_key,
            per_user.first_exposed_at,
            per_user.variants_seen,
            case when per_user.variants_seen = 1 then per_user.first_variant end as variant,
            case
                when per_user.variants_seen > 1 then 'several variants'
                {% for e in experiments %}
                    when
                        per_user.experiment_key = '{{ e.key }}'
                        and per_user.first_variant not in ({{ sql_strings(e.variants | sort) }})
                        then 'variant not in the definition'
                {% endfor %}
            end as excluded_reason,
            per_user.variants,
            defined.definition_hash,
            {{ run_timestamp() }} as _built_at
        from per_user
        inner join defined on per_user.experiment_key = defined.experiment_key

    )

    select
        tenant_id,
        experiment_key,
        user_key,
        first_exposed_at,
        variants_seen,
        variant,
        excluded_reason,
        _built_at,
        variants,
        definition_hash,
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
        cast(null as {{ string_list_type() }}) as variants,
        cast(null as {{ dbt.type_string() }}) as definition_hash,
        cast(null as boolean) as excluded

)

select * from final
where false
{% endif %}

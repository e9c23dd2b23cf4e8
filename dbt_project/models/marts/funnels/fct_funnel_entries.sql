-- Each defined funnel's entries (vars `funnels` in dbt_project.yml): one row per tenant, funnel,
-- user and cohort day (the UTC day of the counted attempt's first step), as the funnel engine
-- counts them (dbt_project/macros/funnels.sql, funnel_entry_ctes; docs/FUNNELS.md): the first
-- step's breakdown values (the funnel's breakdowns; null in the others), the depth reached,
-- step_1_at .. step_10_at (null past the depth and past the funnel's steps), `excluded` (every
-- attempt of the day left by an exclusion) and `pending_until`, the end of the window of the day's
-- latest valid attempt: the entry is pending while a build runs before it (unless converted or
-- excluded). fct_funnel_daily aggregates these rows.
-- Incremental: each run recomputes, per funnel, only the touched users (tenant and user with
-- relevant events staged since the funnel's last build), each from the UTC day of (its earliest
-- such event - window), deleting their entries from that day (macros/funnel_tables.sql,
-- funnel_entry_plans); a new or changed funnel (`definition_hash`) is built whole, and with
-- `rebuild_from` every user is recomputed from the day of (rebuild_from - window).
{{ config(
    materialized='incremental',
    incremental_strategy=staging_strategy(),
    unique_key=['tenant_id', 'funnel_key', 'user_key', 'cohort_day'],
    tags=['hourly'],
    pre_hook="{{ delete_funnel_entries() }}",
) }}

{%- set funnels = funnel_definitions() %}
{%- set plans = funnel_entry_plans(funnels) %}
{%- set dialect = funnel_dialect() %}
{%- set bind = funnel_duckdb_literal if target.type == 'duckdb' else funnel_bigquery_literal %}
{%- set timestamp_type = 'timestamptz' if target.type == 'duckdb' else 'timestamp' %}
{%- set max_steps = 10 %}
{%- set parts = [] %}
{%- for key in funnels | sort if funnel_plan_has_work(plans[key]) %}
    {%- set events = funnel_entry_events(funnels[key], plans[key]) %}
    {%- do parts.append({'key': key, 'funnel': funnels[key], 'events': events}) %}
{%- endfor %}
{#- Nothing to recompute: the first funnel over no events, so the columns keep their types. #}
{%- if not parts and funnels %}
    {%- set first = funnels | sort | first %}
    {%- set events = '(select * from ' ~ ref('stg_tracking__events') ~ ' where false)' %}
    {%- do parts.append({'key': first, 'funnel': funnels[first], 'events': events}) %}
{%- endif %}

{% if parts %}
    {% for part in parts %}
        {%- set n = part.funnel['steps'] | length %}
        {%- set carried = (part.funnel.get('breakdowns') or []) | list %}
        select
            entry_rows.tenant_id,
            '{{ part.key }}' as funnel_key,
            entry_rows.cohort_day,
            entry_rows.user_key,
            {%- for dimension in ['country', 'device', 'page', 'library'] %}
                {% if dimension in carried -%}
                    cast(entry_rows.{{ dimension }} as {{ dbt.type_string() }})
                {%- else -%}
                    cast(null as {{ dbt.type_string() }})
                {%- endif %} as {{ dimension }},
            {%- endfor %}
            entry_rows.depth,
            {%- for k in range(1, max_steps + 1) %}
                {% if k <= n -%}
                    {{ funnel_timestamp_of_us('entry_rows.t_' ~ k, dialect) }}
                {%- else -%}
                    cast(null as {{ timestamp_type }})
                {%- endif %} as step_{{ k }}_at,
            {%- endfor %}
            entry_rows.is_excluded as excluded,
            {{ funnel_timestamp_of_us('entry_rows.open_until', dialect) }} as pending_until,
            {{ n }} as steps,
            '{{ funnel_hash(part.funnel) }}' as definition_hash,
            {{ run_timestamp() }} as _built_at
        from (
            with
            {{ funnel_entry_ctes(
                part.events,
                part.funnel,
                funnel_entry_start(plans[part.key]),
                utc_timestamp('9999-01-01 00:00:00+00:00'),
                run_timestamp(),
                bind,
                dialect=dialect,
                breakdowns=carried,
            ) }}

            select * from funnel_entry_rows
        ) as entry_rows
        {% if not loop.last %}union all{% endif %}
    {% endfor %}
{% else %}
    select
        cast(null as {{ dbt.type_string() }}) as tenant_id,
        cast(null as {{ dbt.type_string() }}) as funnel_key,
        cast(null as date) as cohort_day,
        cast(null as {{ dbt.type_string() }}) as user_key,
        cast(null as {{ dbt.type_string() }}) as definition_hash,
        {{ run_timestamp() }} as _built_at
    where false
{% endif %}

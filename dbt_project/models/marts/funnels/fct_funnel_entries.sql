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
-- A whole build over more relevant events than the `funnel_build_batch_events` var is computed in
-- batches of users by the pre-hook (build_funnel_entry_batches), each batch one statement, so the
-- engine holds one batch's events at a time; the model then reads the batches' table.
{{ config(
    materialized='incremental',
    incremental_strategy=staging_strategy(),
    unique_key=['tenant_id', 'funnel_key', 'user_key', 'cohort_day'],
    tags=['hourly'],
    pre_hook=["{{ build_funnel_entry_batches() }}", "{{ delete_funnel_entries() }}"],
    post_hook="{{ drop_funnel_entry_batches() }}",
) }}

{%- set funnels = funnel_definitions() %}
{%- set plans = funnel_entry_plans(funnels) %}
{%- set batched = funnel_entry_batch_counts(funnels, plans) %}
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
        {%- if part.key in batched %}
            select * from {{ funnel_batch_relation() }} where funnel_key = '{{ part.key }}'
        {%- else %}
            {{ funnel_entry_select(part.key, part.funnel, part.events, plans[part.key]) }}
        {%- endif %}
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

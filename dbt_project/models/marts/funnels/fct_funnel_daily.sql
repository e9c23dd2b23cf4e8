-- Each defined funnel (vars `funnels` in dbt_project.yml) per tenant and cohort day (the UTC day
-- of the counted attempt's first step): users entering, reaching each step, pending (window still
-- open when the table was built) and excluded, and the median and p90 seconds between consecutive
-- steps. One row per day for the whole funnel (`breakdown` ''), and one per value of each of the
-- funnel's breakdowns (`breakdown` names the dimension, `breakdown_value` the first step's value).
-- The rows aggregate fct_funnel_entries (the funnel engine's entries, dbt_project/macros/funnels.sql)
-- with the engine's own summary (funnel_summary_of_entries), the aggregation the query API runs over
-- the engine's entries of the raw events for ad-hoc funnels (docs/FUNNELS.md). Step columns go to
-- 10 (the most steps a funnel may have); those past the funnel's last step are null.
-- Incremental: each run re-aggregates, per funnel, only the cohort days that can have changed since
-- its last build: days with an entry written since, and days with an entry pending then whose window
-- has closed by now (macros/funnel_tables.sql, funnel_daily_plans); a funnel whose definition
-- changed is rebuilt whole, and `rebuild_from` adds every day from (rebuild_from - window).
{{ config(
    materialized='incremental',
    incremental_strategy=staging_strategy(),
    unique_key=['tenant_id', 'funnel_key', 'cohort_day', 'breakdown', 'breakdown_value'],
    tags=['hourly'],
    pre_hook="{{ delete_funnel_days() }}",
) }}

{%- set funnels = funnel_definitions() %}
{%- set plans = funnel_daily_plans(funnels) %}
{%- set max_steps = 10 %}
{%- set count_null = 'cast(null as ' ~ dbt.type_bigint() ~ ')' %}
{%- set seconds_null = 'cast(null as ' ~ double_type() ~ ')' %}
{%- set parts = [] %}
{%- set days = {} %}
{%- set chosen = [] %}
{%- for key in funnels | sort %}
    {%- do days.update({key: funnel_daily_days(plans[key])}) %}
    {%- if days[key] != 'false' %}{%- do chosen.append(key) %}{%- endif %}
{%- endfor %}
{#- Nothing to re-aggregate: the first funnel's rows of no day, so the columns keep their types. #}
{%- if not chosen and funnels %}
    {%- set chosen = [funnels | sort | first] %}
{%- endif %}
{%- for key in chosen %}
    {%- for dimension in [none] + (funnels[key].get('breakdowns') or []) | list %}
        {%- do parts.append({'key': key, 'funnel': funnels[key], 'dimension': dimension}) %}
    {%- endfor %}
{%- endfor %}

{% if parts %}
    {% for part in parts %}
        {%- set n = part.funnel['steps'] | length %}
        select
            summary.tenant_id,
            '{{ part.key }}' as funnel_key,
            summary.cohort_day,
            '{{ part.dimension or "" }}' as breakdown,
            {% if part.dimension -%}
                cast(summary.{{ part.dimension }} as {{ dbt.type_string() }})
            {%- else -%}
                cast(null as {{ dbt.type_string() }})
            {%- endif %} as breakdown_value,
            summary.entered,
            summary.pending,
            summary.excluded,
            {%- for k in range(1, max_steps + 1) %}
                {% if k <= n %}summary.reached_{{ k }},{% else %}{{ count_null }} as reached_{{ k }},{% endif %}
            {%- endfor %}
            {%- for k in range(1, max_steps) %}
                {% if k < n %}summary.pending_at_{{ k }},{% else %}{{ count_null }} as pending_at_{{ k }},{% endif %}
            {%- endfor %}
            {%- for k in range(2, max_steps + 1) %}
                {% if k <= n %}summary.median_s_{{ k }},{% else %}{{ seconds_null }} as median_s_{{ k }},{% endif %}
                {% if k <= n %}summary.p90_s_{{ k }},{% else %}{{ seconds_null }} as p90_s_{{ k }},{% endif %}
            {%- endfor %}
            {{ n }} as steps,
            '{{ funnel_hash(part.funnel) }}' as definition_hash,
            {{ run_timestamp() }} as _built_at
        from (
            {{ funnel_summary_of_entries(
                funnel_stored_entries(
                    part.key, part.funnel, days[part.key], [part.dimension] if part.dimension else []
                ),
                part.funnel,
                dialect=funnel_dialect(),
                breakdowns=([part.dimension] if part.dimension else []),
            ) }}
        ) as summary
        {% if not loop.last %}union all{% endif %}
    {% endfor %}
{% else %}
    select
        cast(null as {{ dbt.type_string() }}) as tenant_id,
        cast(null as {{ dbt.type_string() }}) as funnel_key,
        cast(null as date) as cohort_day,
        cast(null as {{ dbt.type_string() }}) as breakdown,
        cast(null as {{ dbt.type_string() }}) as breakdown_value,
        cast(null as {{ dbt.type_string() }}) as definition_hash,
        {{ run_timestamp() }} as _built_at
    where false
{% endif %}

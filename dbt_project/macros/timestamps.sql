{#- Timestamp literals and the run time, in each warehouse's syntax. -#}

{% macro utc_timestamp(value) -%}
    {{ return(adapter.dispatch('utc_timestamp', 'analytics')(value)) }}
{%- endmacro %}

{% macro default__utc_timestamp(value) -%}
    cast('{{ value }}' as timestamp)
{%- endmacro %}

{% macro duckdb__utc_timestamp(value) -%}
    cast('{{ value }}' as timestamptz)
{%- endmacro %}

{#- When this dbt invocation started: every model of one build stamps the same time. -#}
{% macro run_timestamp() -%}
    {{ utc_timestamp(run_started_at.strftime('%Y-%m-%d %H:%M:%S.%f+00:00')) }}
{%- endmacro %}

{#- The `rebuild_from` var as a timestamp literal, or none; parsed so only a valid time reaches SQL. -#}
{% macro rebuild_point() -%}
    {%- set value = var('rebuild_from') -%}
    {%- if not value -%}{{ return(none) }}{%- endif -%}
    {%- set parsed = modules.datetime.datetime.fromisoformat(value | string) -%}
    {%- if parsed.tzinfo is none -%}
        {{ exceptions.raise_compiler_error("rebuild_from must carry a UTC offset, e.g. 2026-11-25T00:00:00+00:00; got " ~ value) }}
    {%- endif -%}
    {%- set utc = parsed.astimezone(modules.pytz.utc) -%}
    {{ return(utc_timestamp(utc.strftime('%Y-%m-%d %H:%M:%S.%f+00:00'))) }}
{%- endmacro %}

{#- Backfill and replay: drop what will be rebuilt from the `rebuild_from` var onwards. -#}
{% macro delete_from_rebuild_point(column) -%}
    {%- if is_incremental() and rebuild_point() -%}
        delete from {{ this }} where {{ column }} >= {{ rebuild_point() }}
    {%- endif -%}
{%- endmacro %}

{#- `expression` moved by `amount` units (minute, hour, day), staying a UTC timestamp. -#}
{% macro shift_timestamp(expression, amount, unit) -%}
    {{ return(adapter.dispatch('shift_timestamp', 'analytics')(expression, amount, unit)) }}
{%- endmacro %}

{% macro default__shift_timestamp(expression, amount, unit) -%}
    timestamp_add({{ expression }}, interval {{ amount }} {{ unit }})
{%- endmacro %}

{% macro duckdb__shift_timestamp(expression, amount, unit) -%}
    ({{ expression }} + interval ({{ amount }}) {{ unit }})
{%- endmacro %}

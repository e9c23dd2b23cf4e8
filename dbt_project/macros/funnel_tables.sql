{#-
    What fct_funnel_daily needs besides the funnel engine (macros/funnels.sql, plain Jinja shared with
    the query API): the funnels of `var('funnels')` with their keys checked, and where each funnel's
    incremental run starts.
-#}

{#- The funnels of `var('funnels')`, their keys checked (they are written into the SQL); the rest the
    funnel macros check or bind (dbt_project/macros/funnels.sql). -#}
{% macro funnel_definitions() %}
    {%- set raw = var('funnels', {}) or {} -%}
    {%- for key in raw -%}
        {%- if not modules.re.match('^[a-z][a-z0-9_]{0,62}$', key) -%}
            {{ exceptions.raise_compiler_error("funnels." ~ key ~ ": keys are lowercase letters, digits and _") }}
        {%- endif -%}
        {%- for dimension in raw[key].get('breakdowns') or [] -%}
            {%- if dimension not in ('country', 'device', 'page', 'library') -%}
                {{ exceptions.raise_compiler_error("funnels." ~ key ~ ".breakdowns: " ~ dimension ~ " is not a breakdown dimension") }}
            {%- endif -%}
        {%- endfor -%}
    {%- endfor -%}
    {{ return(raw) }}
{% endmacro %}

{#-
    Per funnel key, where fct_funnel_daily's incremental run starts: the first cohort day (an ISO
    date) whose rows can have changed since the funnel's last build, or none to rebuild the funnel
    whole (no rows yet, or its definition changed: `definition_hash` differs). A day can change while
    an entry's window was still open at the last build (first steps from `_built_at` - window on),
    and when events staged since then reach back into it (first steps from their earliest time -
    window on). The `rebuild_from` var moves the start back too. Days are counted from epoch
    microseconds, so no session time zone is involved.
-#}
{% macro funnel_rebuild_days(funnels) %}
    {%- set out = {} -%}
    {%- if not (execute and is_incremental()) -%}{{ return(out) }}{%- endif -%}
    {%- set dialect = 'duckdb' if target.type == 'duckdb' else 'bigquery' -%}
    {%- for key in funnels | sort -%}
        {%- set window = duration_seconds(funnels[key]['window'], 'funnels.' ~ key ~ '.window') -%}
        {%- set since = 'least(built.built_at, coalesce(fresh.first_new, built.built_at))' -%}
        {%- if rebuild_point() -%}{%- set since = 'least(' ~ since ~ ', ' ~ rebuild_point() ~ ')' -%}{%- endif -%}
        {%- set query -%}
            with built as (
                select max(_built_at) as built_at, min(definition_hash) as low, max(definition_hash) as high
                from {{ this }}
                where funnel_key = '{{ key }}'
            ),
            fresh as (
                select min(event_at) as first_new
                from {{ ref('stg_tracking__events') }}
                where _staged_at > (select built_at from built)
            )
            select
                cast({{ funnel_date_of_us(funnel_epoch_us(since, dialect) ~ ' - ' ~ (window * 1000000), dialect) }}
                    as {{ dbt.type_string() }}) as from_day,
                built.low,
                built.high
            from built cross join fresh
        {%- endset -%}
        {%- set result = run_query(query) -%}
        {#- No row: nothing could be read (the BigQuery compile check's stub client): rebuild it whole. -#}
        {%- set row = result.rows[0] if result.rows | length else [none, none, none] -%}
        {%- set hash = local_md5(tojson(funnels[key], sort_keys=true)) -%}
        {%- if row[0] is none or row[1] != hash or row[2] != hash -%}
            {%- do out.update({key: none}) -%}
        {%- else -%}
            {%- do out.update({key: row[0] | string}) -%}
        {%- endif -%}
    {%- endfor -%}
    {{ return(out) }}
{% endmacro %}

{#- fct_funnel_daily's pre-hook: delete what the run rebuilds (funnel_rebuild_days), and funnels no longer defined. -#}
{% macro delete_funnel_days() %}
    {%- if not (execute and is_incremental()) -%}{{ return('') }}{%- endif -%}
    {%- set funnels = funnel_definitions() -%}
    {%- set days = funnel_rebuild_days(funnels) -%}
    {%- set parts = [] -%}
    {%- for key, day in days.items() -%}
        {%- if day is none -%}
            {%- do parts.append("funnel_key = '" ~ key ~ "'") -%}
        {%- else -%}
            {%- do parts.append("(funnel_key = '" ~ key ~ "' and cohort_day >= cast('" ~ day ~ "' as date))") -%}
        {%- endif -%}
    {%- endfor -%}
    {%- if funnels -%}
        {%- do parts.append("funnel_key not in (" ~ sql_strings(funnels | sort) ~ ")") -%}
    {%- endif -%}
    delete from {{ this }} where {{ parts | join(' or ') if parts else 'true' }}
{% endmacro %}

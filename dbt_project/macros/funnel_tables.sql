{#-
    What fct_funnel_entries and fct_funnel_daily need besides the funnel engine (macros/funnels.sql,
    plain Jinja shared with the query API): the funnels of `var('funnels')` with their keys checked,
    and what each incremental run recomputes (docs/FUNNELS.md, "The daily table").
-#}

{#- The funnels of `var('funnels')`, their keys checked (they are written into the SQL); the rest the
    funnel macros check or bind (dbt_project/macros/funnels.sql). A funnel with a `purchase` step or
    exclusion carries the purchase mapping under `purchases` (so it enters its definition_hash too:
    analytics_core/funnels.py's table_hashes adds the same). -#}
{% macro funnel_definitions() %}
    {%- set raw = {} -%}
    {%- for key, entry in (var('funnels', {}) or {}).items() -%}
        {%- set entry = dict(entry) -%}
        {%- for step in (entry['steps'] | list) + ((entry.get('exclusions') or []) | list) if (step['event_type'] | string) == 'purchase' and 'purchases' not in entry -%}
            {%- do entry.update({'purchases': purchase_types()}) -%}
        {%- endfor -%}
        {%- do raw.update({key: entry}) -%}
    {%- endfor -%}
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

{#- The md5 of a funnel's YAML entry: `definition_hash` in both tables. -#}
{% macro funnel_hash(funnel) %}
    {{ return(local_md5(tojson(funnel, sort_keys=true))) }}
{% endmacro %}

{% macro funnel_dialect() %}
    {{ return('duckdb' if target.type == 'duckdb' else 'bigquery') }}
{% endmacro %}

{% macro funnel_window_us(funnel) %}
    {{ return((funnel_window_seconds(funnel['window']) | int) * 1000000) }}
{% endmacro %}

{#- With the `rebuild_from` var, the UTC day (ISO date) of (rebuild_from - the funnel's window); else none. -#}
{% macro funnel_rebuild_day(funnel) %}
    {%- if not rebuild_point() -%}{{ return(none) }}{%- endif -%}
    {%- set parsed = modules.datetime.datetime.fromisoformat(var('rebuild_from') | string) -%}
    {%- set back = modules.datetime.timedelta(seconds=funnel_window_us(funnel) // 1000000) -%}
    {{ return((parsed.astimezone(modules.pytz.utc) - back).date().isoformat()) }}
{% endmacro %}

{#- The first row of `query`, or none when nothing could be read (the BigQuery compile check's stub client). -#}
{% macro funnel_first_row(query) %}
    {%- set result = run_query(query) -%}
    {{ return(result.rows[0] if result.rows | length else none) }}
{% endmacro %}

{#-
    The staged events that can change a funnel's entries: not a bot's, with a user, and (unless the
    funnel is strict, where any event between two steps breaks it) of a type the funnel uses; the
    engine reads no others (funnel_entry_ctes' funnel_events).
-#}
{% macro funnel_relevant_events(funnel) -%}
    {%- set bind = funnel_duckdb_literal if target.type == 'duckdb' else funnel_bigquery_literal -%}
    {%- set types = [] -%}
    {%- for step in (funnel['steps'] | list) + ((funnel.get('exclusions') or []) | list) -%}
        {%- if (step['event_type'] | string) not in types -%}{%- do types.append(step['event_type'] | string) -%}{%- endif -%}
    {%- endfor -%}
    user_key is not null and is_bot is not true
    {%- if (funnel.get('order') or 'ordered') != 'strict' %} and event_type in ({{ event_types_bound(types, bind, funnel.get('purchases')) }}){%- endif -%}
{%- endmacro %}

{#-
    Per funnel key, what fct_funnel_entries' run recomputes: none to build the funnel whole (first
    build, no rows yet, or its definition changed: `definition_hash` differs), else a dict with
    `since`, the table's last build for the funnel in epoch microseconds: the touched users are those
    with relevant events staged after it, each recomputed from the UTC day of (its earliest such
    event - window), the first day whose entries such an event can reach; `floor`, the earliest of
    those days (an ISO date; none when nothing was staged); and `rebuild_day`, set by the
    `rebuild_from` var: every user is recomputed from the day of (rebuild_from - window) too.
-#}
{% macro funnel_entry_plans(funnels) %}
    {%- set out = {} -%}
    {%- for key in funnels | sort -%}{%- do out.update({key: none}) -%}{%- endfor -%}
    {%- if not (execute and is_incremental()) -%}{{ return(out) }}{%- endif -%}
    {%- set dialect = funnel_dialect() -%}
    {%- for key in funnels | sort -%}
        {%- set w_us = funnel_window_us(funnels[key]) -%}
        {%- set query -%}
            with built as (
                select max(_built_at) as built_at, min(definition_hash) as low, max(definition_hash) as high
                from {{ this }}
                where funnel_key = '{{ key }}'
            ),
            fresh as (
                select min(event_at) as first_new
                from {{ ref('stg_tracking__events') }}
                where _staged_at > (select built_at from built) and {{ funnel_relevant_events(funnels[key]) }}
            )
            select
                {{ funnel_epoch_us('built.built_at', dialect) }} as built_us,
                built.low,
                built.high,
                cast({{ funnel_date_of_us(funnel_epoch_us('fresh.first_new', dialect) ~ ' - ' ~ w_us, dialect) }}
                    as {{ dbt.type_string() }}) as floor_day
            from built cross join fresh
        {%- endset -%}
        {%- set row = funnel_first_row(query) -%}
        {%- set hash = funnel_hash(funnels[key]) -%}
        {%- if row is none -%}
            {#- Nothing could be read (the BigQuery compile check): every user from the start, which is a
                whole build, through the incremental SQL. -#}
            {%- do out.update({key: {'since': 0, 'floor': '1900-01-01', 'rebuild_day': funnel_rebuild_day(funnels[key])}}) -%}
        {%- elif row[0] is not none and row[1] == hash and row[2] == hash -%}
            {%- do out.update({key: {
                'since': row[0] | int,
                'floor': none if row[3] is none else row[3] | string,
                'rebuild_day': funnel_rebuild_day(funnels[key]),
            }}) -%}
        {%- endif -%}
    {%- endfor -%}
    {{ return(out) }}
{% endmacro %}

{#- A plan's touched users (funnel_entry_plans): tenant_id, user_key, and from when they are recomputed, as a time (from_at) and a day (from_day). -#}
{% macro funnel_touched_users(funnel, plan) -%}
    {%- set dialect = funnel_dialect() -%}
    {%- set day_us = funnel_day_number('(' ~ funnel_epoch_us('min(event_at)', dialect) ~ ' - ' ~ funnel_window_us(funnel) ~ ')', dialect) ~ ' * 86400000000' -%}
    select
        tenant_id,
        user_key,
        {{ funnel_timestamp_of_us(day_us, dialect) }} as from_at,
        {{ funnel_date_of_us(day_us, dialect) }} as from_day
    from {{ ref('stg_tracking__events') }}
    where _staged_at > {{ funnel_timestamp_of_us(plan['since'], dialect) }} and {{ funnel_relevant_events(funnel) }}
    group by tenant_id, user_key
{%- endmacro %}

{#-
    The events fct_funnel_entries counts a funnel over: all staged events for a whole build (plan
    none); else the touched users' events from their from_at, and with rebuild_day every user's from
    that day.
-#}
{% macro funnel_entry_events(funnel, plan) -%}
    {%- if plan is none -%}{{ return(ref('stg_tracking__events')) }}{%- endif -%}
    {%- set rebuild = plan['rebuild_day'] -%}
    (
        select funnel_staged.*
        from {{ ref('stg_tracking__events') }} as funnel_staged
        {{ 'left' if rebuild else 'inner' }} join ({{ funnel_touched_users(funnel, plan) }}) as funnel_touched
            on
                funnel_staged.tenant_id = funnel_touched.tenant_id
                and funnel_staged.user_key = funnel_touched.user_key
        where
            funnel_staged.event_at >= {{ funnel_entry_start(plan) }}
            and (
                funnel_staged.event_at >= funnel_touched.from_at
                {%- if rebuild %}
                or funnel_staged.event_at >= {{ utc_timestamp(rebuild ~ ' 00:00:00+00:00') }}
                {%- endif %}
            )
    )
{%- endmacro %}

{#- The first time whose events a plan reads (all of them for a whole build). -#}
{% macro funnel_entry_start(plan) -%}
    {%- set days = [] if plan is none else [plan['floor'], plan['rebuild_day']] | reject('none') | list -%}
    {{ utc_timestamp((days | min if days else '1900-01-01') ~ ' 00:00:00+00:00') }}
{%- endmacro %}

{#- Whether the plan recomputes anything: a whole build, events staged since the last build, or a rebuild. -#}
{% macro funnel_plan_has_work(plan) %}
    {{ return(plan is none or plan['floor'] is not none or plan['rebuild_day'] is not none) }}
{% endmacro %}

{#- fct_funnel_entries' pre-hook: delete what the run recomputes (funnel_entry_plans), and funnels no longer defined. -#}
{% macro delete_funnel_entries() %}
    {%- if not (execute and is_incremental()) -%}{{ return('') }}{%- endif -%}
    {%- set funnels = funnel_definitions() -%}
    {%- set plans = funnel_entry_plans(funnels) -%}
    {%- set parts = [] -%}
    {%- for key, plan in plans.items() -%}
        {%- if plan is none -%}
            {%- do parts.append("funnel_key = '" ~ key ~ "'") -%}
        {%- elif funnel_plan_has_work(plan) -%}
            {%- set which = [] -%}
            {%- if plan['floor'] is not none -%}
                {%- do which.append(
                    'exists (select 1 from (' ~ funnel_touched_users(funnels[key], plan) ~ ') as funnel_touched'
                    ~ ' where funnel_touched.tenant_id = funnel_entries.tenant_id'
                    ~ ' and funnel_touched.user_key = funnel_entries.user_key'
                    ~ ' and funnel_entries.cohort_day >= funnel_touched.from_day)'
                ) -%}
            {%- endif -%}
            {%- if plan['rebuild_day'] is not none -%}
                {%- do which.append("funnel_entries.cohort_day >= cast('" ~ plan['rebuild_day'] ~ "' as date)") -%}
            {%- endif -%}
            {%- do parts.append("(funnel_key = '" ~ key ~ "' and (" ~ which | join(' or ') ~ "))") -%}
        {%- endif -%}
    {%- endfor -%}
    {%- if funnels -%}
        {%- do parts.append("funnel_key not in (" ~ sql_strings(funnels | sort) ~ ")") -%}
    {%- endif -%}
    delete from {{ this }} as funnel_entries where {{ parts | join(' or ') if parts else 'true' }}
{% endmacro %}

{#-
    Per funnel key, what fct_funnel_daily's run re-aggregates from fct_funnel_entries: none for the
    whole funnel (first build, no rows yet, or its definition changed), else a dict with `days`, the
    cohort days (ISO dates) whose counts can have changed since the funnel's last build: those with
    an entry written since (_built_at later), and those with an entry that was pending then and whose
    window has closed by now (pending_until in between; converted and excluded entries do not change
    with time); and `from_day`, with `rebuild_from`, the day of (rebuild_from - window): every day
    from it too.
-#}
{% macro funnel_daily_plans(funnels) %}
    {%- set out = {} -%}
    {%- for key in funnels | sort -%}{%- do out.update({key: none}) -%}{%- endfor -%}
    {%- if not (execute and is_incremental()) -%}{{ return(out) }}{%- endif -%}
    {%- set dialect = funnel_dialect() -%}
    {%- for key in funnels | sort -%}
        {%- set hash = funnel_hash(funnels[key]) -%}
        {%- set query -%}
            select
                {{ funnel_epoch_us('max(_built_at)', dialect) }} as built_us,
                min(definition_hash) as low,
                max(definition_hash) as high
            from {{ this }}
            where funnel_key = '{{ key }}'
        {%- endset -%}
        {%- set row = funnel_first_row(query) -%}
        {%- if row is not none and row[0] is not none and row[1] == hash and row[2] == hash -%}
            {%- set built = funnel_timestamp_of_us(row[0] | int, dialect) -%}
            {%- set query -%}
                select distinct cast(cohort_day as {{ dbt.type_string() }}) as cohort_day
                from {{ ref('fct_funnel_entries') }}
                where
                    funnel_key = '{{ key }}'
                    and (
                        _built_at > {{ built }}
                        or (
                            not excluded and depth < steps
                            and pending_until > {{ built }} and pending_until <= {{ run_timestamp() }}
                        )
                    )
                order by 1
            {%- endset -%}
            {%- set days = [] -%}
            {%- for day in run_query(query).columns[0].values() -%}{%- do days.append(day | string) -%}{%- endfor -%}
            {%- do out.update({key: {'days': days, 'from_day': funnel_rebuild_day(funnels[key])}}) -%}
        {%- endif -%}
    {%- endfor -%}
    {{ return(out) }}
{% endmacro %}

{#- The plan's days as a condition on cohort_day (funnel_daily_plans): none for all days, 'false' for none. -#}
{% macro funnel_daily_days(plan, prefix='') -%}
    {%- if plan is none -%}{{ return(none) }}{%- endif -%}
    {%- set parts = [] -%}
    {%- if plan['from_day'] is not none -%}
        {%- do parts.append(prefix ~ "cohort_day >= cast('" ~ plan['from_day'] ~ "' as date)") -%}
    {%- endif -%}
    {%- if plan['days'] -%}
        {%- set listed = [] -%}
        {%- for day in plan['days'] -%}{%- do listed.append("cast('" ~ day ~ "' as date)") -%}{%- endfor -%}
        {%- do parts.append(prefix ~ 'cohort_day in (' ~ listed | join(', ') ~ ')') -%}
    {%- endif -%}
    {{ return(parts | join(' or ') if parts else 'false') }}
{%- endmacro %}

{#-
    A funnel's entries from fct_funnel_entries as the summary takes them (funnel_summary_of_entries:
    the shape of the engine's funnel_entry_rows), for the cohort days of `days` (SQL, none for all),
    with each entry's status as of this run (funnel_status, the engine's own rule).
-#}
{% macro funnel_stored_entries(key, funnel, days, columns) -%}
    {%- set dialect = funnel_dialect() -%}
    {%- set n = funnel['steps'] | length -%}
    (
        select
            tenant_id,
            cohort_day,
            {%- for column in columns %}
            {{ column }},
            {%- endfor %}
            depth,
            {%- for k in range(1, n + 1) %}
            {{ funnel_epoch_us('step_' ~ k ~ '_at', dialect) }} as t_{{ k }},
            {%- endfor %}
            {{ funnel_status('excluded', 'depth', n, funnel_epoch_us('pending_until', dialect), funnel_epoch_us(run_timestamp(), dialect)) }} as status,
            excluded as is_excluded
        from {{ ref('fct_funnel_entries') }}
        where
            funnel_key = '{{ key }}'
            and definition_hash = '{{ funnel_hash(funnel) }}'
            {%- if days is not none %}
            and ({{ days }})
            {%- endif %}
    )
{%- endmacro %}

{#- fct_funnel_daily's pre-hook: delete the days the run re-aggregates (funnel_daily_plans), and funnels no longer defined. -#}
{% macro delete_funnel_days() %}
    {%- if not (execute and is_incremental()) -%}{{ return('') }}{%- endif -%}
    {%- set funnels = funnel_definitions() -%}
    {%- set plans = funnel_daily_plans(funnels) -%}
    {%- set parts = [] -%}
    {%- for key, plan in plans.items() -%}
        {%- set days = funnel_daily_days(plan) -%}
        {%- if days is none -%}
            {%- do parts.append("funnel_key = '" ~ key ~ "'") -%}
        {%- elif days != 'false' -%}
            {%- do parts.append("(funnel_key = '" ~ key ~ "' and (" ~ days ~ "))") -%}
        {%- endif -%}
    {%- endfor -%}
    {%- if funnels -%}
        {%- do parts.append("funnel_key not in (" ~ sql_strings(funnels | sort) ~ ")") -%}
    {%- endif -%}
    delete from {{ this }} where {{ parts | join(' or ') if parts else 'true' }}
{% endmacro %}

{#-
    One funnel's rows of fct_funnel_entries, in the table's column order, over `events` (a relation
    or parenthesised subquery: funnel_entry_events, or one batch of users) from the first time the
    plan reads (funnel_entry_start).
-#}
{% macro funnel_entry_select(key, funnel, events, plan) -%}
    {%- set dialect = funnel_dialect() -%}
    {%- set bind = funnel_duckdb_literal if target.type == 'duckdb' else funnel_bigquery_literal -%}
    {%- set timestamp_type = 'timestamptz' if target.type == 'duckdb' else 'timestamp' -%}
    {%- set max_steps = 10 -%}
    {%- set n = funnel['steps'] | length -%}
    {%- set carried = (funnel.get('breakdowns') or []) | list -%}
    select
        entry_rows.tenant_id,
        '{{ key }}' as funnel_key,
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
        '{{ funnel_hash(funnel) }}' as definition_hash,
        {{ run_timestamp() }} as _built_at
    from (
        with
        {{ funnel_entry_ctes(
            events,
            funnel,
            funnel_entry_start(plan),
            utc_timestamp('9999-01-01 00:00:00+00:00'),
            run_timestamp(),
            bind,
            dialect=dialect,
            breakdowns=carried,
        ) }}

        select * from funnel_entry_rows
    ) as entry_rows
{%- endmacro %}

{#-
    Whole builds in batches. A funnel built whole (funnel_entry_plans: none) reads every staged event
    of its types, and the engine's window functions hold them at once: at 100M events that is more
    memory than a 24 GB machine has. When the relevant events outnumber the `funnel_build_batch_events`
    var, fct_funnel_entries' pre-hook computes the funnel in batches of users instead (a user's
    entries depend on that user's events only, so the batches' rows are the whole build's), each
    batch one statement into a scratch table that the model then reads; its post-hook drops it.
    Per funnel key built that way, the number of batches.
-#}
{% macro funnel_entry_batch_counts(funnels, plans) %}
    {%- set out = {} -%}
    {%- set whole = [] -%}
    {%- for key in funnels | sort if plans[key] is none -%}{%- do whole.append(key) -%}{%- endfor -%}
    {#- Not running, or nothing staged yet to count (a first compile: sqlfluff, dbt compile). -#}
    {%- if not (execute and whole) or load_relation(ref('stg_tracking__events')) is none -%}{{ return(out) }}{%- endif -%}
    {%- set size = var('funnel_build_batch_events', 10000000) | int -%}
    {%- if size < 1 -%}
        {{ exceptions.raise_compiler_error("funnel_build_batch_events must be a positive number of events, not " ~ size) }}
    {%- endif -%}
    {%- for key in whole -%}
        {%- set row = funnel_first_row(
            'select count(*) from ' ~ ref('stg_tracking__events') ~ ' where ' ~ funnel_relevant_events(funnels[key])
        ) -%}
        {%- set relevant = 0 if row is none or row[0] is none else row[0] | int -%}
        {%- if relevant > size -%}
            {%- do out.update({key: (relevant + size - 1) // size}) -%}
        {%- endif -%}
    {%- endfor -%}
    {{ return(out) }}
{% endmacro %}

{#- The batches' scratch table: a temporary table of the run's connection on DuckDB (nothing written
    to the lake), a table beside fct_funnel_entries on BigQuery. -#}
{% macro funnel_batch_relation() -%}
    {%- if target.type == 'duckdb' -%}
        temp.main.{{ this.identifier }}__batches
    {%- else -%}
        {{ api.Relation.create(database=this.database, schema=this.schema, identifier=this.identifier ~ '__batches') }}
    {%- endif -%}
{%- endmacro %}

{#- Batch `i` of `n` of the staged events: the users whose key hashes to i. -#}
{% macro funnel_batch_events(i, n) -%}
    {%- if target.type == 'duckdb' -%}
        {%- set bucket = 'hash(user_key) % ' ~ n -%}
    {%- else -%}
        {%- set bucket = 'abs(mod(farm_fingerprint(user_key), ' ~ n ~ '))' -%}
    {%- endif -%}
    (select * from {{ ref('stg_tracking__events') }} where {{ bucket }} = {{ i }})
{%- endmacro %}

{#- fct_funnel_entries' first pre-hook: the whole builds of funnel_entry_batch_counts, batch by batch,
    into funnel_batch_relation, each batch logged as it is done. -#}
{% macro build_funnel_entry_batches() %}
    {%- if not execute -%}{{ return('') }}{%- endif -%}
    {%- set funnels = funnel_definitions() -%}
    {%- set counts = funnel_entry_batch_counts(funnels, funnel_entry_plans(funnels)) -%}
    {%- if not counts -%}{{ return('') }}{%- endif -%}
    {%- set relation = funnel_batch_relation() -%}
    {%- do run_query('drop table if exists ' ~ relation) -%}
    {%- for key in counts | sort -%}
        {%- set first_funnel = loop.first -%}
        {%- set n = counts[key] -%}
        {%- for i in range(n) -%}
            {%- set started = modules.datetime.datetime.now() -%}
            {%- set rows = funnel_entry_select(key, funnels[key], funnel_batch_events(i, n), none) -%}
            {%- if first_funnel and loop.first -%}
                {%- do run_query('create ' ~ ('temp ' if target.type == 'duckdb' else '') ~ 'table ' ~ relation ~ ' as ' ~ rows) -%}
            {%- else -%}
                {%- do run_query('insert into ' ~ relation ~ ' ' ~ rows) -%}
            {%- endif -%}
            {%- set seconds = (modules.datetime.datetime.now() - started).total_seconds() -%}
            {{ log('fct_funnel_entries: funnel ' ~ key ~ ' built whole in ' ~ n ~ ' batches of users, batch '
                ~ (i + 1) ~ ' of ' ~ n ~ ' done in ' ~ '%.1f' | format(seconds) ~ ' s', info=True) }}
        {%- endfor -%}
    {%- endfor -%}
    {{ return('') }}
{% endmacro %}

{#- fct_funnel_entries' post-hook: the batches' scratch table goes (if a run made one). -#}
{% macro drop_funnel_entry_batches() %}
    {%- if not execute -%}{{ return('') }}{%- endif -%}
    drop table if exists {{ funnel_batch_relation() }}
{% endmacro %}

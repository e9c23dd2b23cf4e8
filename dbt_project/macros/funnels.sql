{#-
    Funnels: the one SQL implementation of docs/FUNNELS.md ("Semantics"). dbt models render these
    macros (fct_funnel_entries counts, fct_funnel_daily aggregates), and the query API renders this
    very file with plain jinja2 for ad-hoc funnels over the raw events (analytics_core/funnel_sql.py),
    so the two cannot disagree.
    That is why nothing here touches dbt's context (ref, var, adapter, return, target): the caller
    passes the events relation (a table name or a parenthesised subquery), the funnel (the shape of
    Funnel.model_dump(), or the raw `vars: funnels` entry, with the purchase mapping under `purchases`
    when a step is `purchase`), the first-step range [start, end) and
    `as_of` as SQL expressions, the dialect ('duckdb' or 'bigquery'), and `bind`, which turns each
    value of the definition into SQL: dbt passes funnel_duckdb_literal or funnel_bigquery_literal
    (dbt.string_literal does not escape quotes), the API a function that records a named
    parameter. Field and column names are pasted, so they are checked here; values never are.

    Times are integer epoch microseconds throughout: exact, and the same arithmetic in both
    warehouses. Each step is found with window functions over a user's events ("the earliest
    event of step k strictly after this event's time"), so the work grows with the events, plus
    one hash join per step that moves each attempt on to the row of the event it reached.
-#}

{#- Stops the rendering with `message` (plain Jinja has no raise; dict.pop of a missing key does). -#}
{% macro funnel_fail(message) -%}
    {%- do {}.pop('funnels.sql: ' ~ message) -%}
{%- endmacro %}

{#- ---- Dialect differences: kept to these helpers. ---- -#}

{% macro funnel_epoch_us(expression, dialect) -%}
    {%- if dialect == 'bigquery' -%}unix_micros({{ expression }}){%- else -%}epoch_us({{ expression }}){%- endif -%}
{%- endmacro %}

{#- A UTC timestamp from epoch microseconds (make_timestamp is UTC wall time, so no session zone is involved). -#}
{% macro funnel_timestamp_of_us(expression, dialect) -%}
    {%- if dialect == 'bigquery' -%}timestamp_micros({{ expression }})
    {%- else -%}timezone('UTC', make_timestamp({{ expression }})){%- endif -%}
{%- endmacro %}

{% macro funnel_date_of_us(expression, dialect) -%}
    {%- if dialect == 'bigquery' -%}date(timestamp_micros({{ expression }}))
    {%- else -%}cast(make_timestamp({{ expression }}) as date){%- endif -%}
{%- endmacro %}

{#- Days since 1970-01-01 (UTC) of epoch microseconds, as an integer to partition by. -#}
{% macro funnel_day_number(expression, dialect) -%}
    {%- if dialect == 'bigquery' -%}div({{ expression }}, 86400000000)
    {%- else -%}({{ expression }} // 86400000000){%- endif -%}
{%- endmacro %}

{% macro funnel_add_seconds(expression, seconds, dialect) -%}
    {%- if dialect == 'bigquery' -%}timestamp_add({{ expression }}, interval {{ seconds | int }} second)
    {%- else -%}({{ expression }} + interval ({{ seconds | int }}) second){%- endif -%}
{%- endmacro %}

{% macro funnel_double(expression, dialect) -%}
    cast({{ expression }} as {{ 'float64' if dialect == 'bigquery' else 'double' }})
{%- endmacro %}

{% macro funnel_null_int(dialect) -%}
    cast(null as {{ 'int64' if dialect == 'bigquery' else 'bigint' }})
{%- endmacro %}

{#-
    A top-level JSON value as text, null when missing, null or not a scalar: BigQuery's json_value.
    DuckDB's json_value gives the same but as JSON (a string still quoted), hence the unquoting.
-#}
{% macro funnel_json_string(column, key, dialect) -%}
    {%- if dialect == 'bigquery' -%}json_value({{ column }}, '$.{{ key }}')
    {%- else -%}json_extract_string(json_value({{ column }}, '$.{{ key }}'), '$'){%- endif -%}
{%- endmacro %}

{#- ---- Binding values as literals, for callers without query parameters (dbt). ---- -#}

{% macro funnel_duckdb_literal(value) -%}
    '{{ value | string | replace("'", "''") }}'
{%- endmacro %}

{% macro funnel_bigquery_literal(value) -%}
    '{{ value | string | replace('\\', '\\\\') | replace("'", "\\'") | replace('\n', '\\n') | replace('\r', '\\r') }}'
{%- endmacro %}

{#- ---- The definition: fields, conditions, the window. ---- -#}

{#- SQL of a filterable field: one of the columns, or `properties.<key>` (key checked: it is pasted). -#}
{% macro funnel_field(name, dialect) -%}
    {%- set key = name[11:] if name.startswith('properties.') else '' -%}
    {%- if name in ['page', 'country', 'device', 'library', 'currency', 'experiment_variant'] -%}
        {{ name }}
    {%- elif key and key.isascii() and key.isidentifier() and key | length <= 63 -%}
        {{ funnel_json_string('properties', key, dialect) }}
    {%- else -%}
        {{ funnel_fail(name ~ ' is not a filterable field (page, country, device, library, currency, experiment_variant or properties.<key>)') }}
    {%- endif -%}
{%- endmacro %}

{#-
    The purchase mapping: the event type `purchase` in a funnel step, a metric or an experiment metric
    stands for the event types of the tenant's purchase mapping. `purchases` is {'default': [types],
    'tenants': {tenant: [types]}} (Catalogue.purchases.sql_types() in Python, the macro purchase_types
    in dbt), or none, where `purchase` is an event type like any other.
-#}

{#- The real event types `types` can be for any tenant, bound and joined by commas: for a filter that
    keeps at least every event event_type_in() can match. -#}
{% macro event_types_bound(types, bind, purchases) -%}
    {%- set out = [] -%}
    {%- for name in types -%}
        {%- set reals = [name] -%}
        {%- if name == 'purchase' and purchases -%}
            {%- set reals = purchases['default'] | list -%}
            {%- for tenant, own in (purchases.get('tenants') or {}) | dictsort -%}
                {%- for real in own if real not in reals -%}{%- do reals.append(real) -%}{%- endfor -%}
            {%- endfor -%}
        {%- endif -%}
        {%- for real in reals if real not in out -%}{%- do out.append(real) -%}{%- endfor -%}
    {%- endfor -%}
    {%- set bound = [] -%}
    {%- for real in out -%}{%- do bound.append(bind(real | string)) -%}{%- endfor -%}
    {{- bound | join(', ') -}}
{%- endmacro %}

{#- True when the event's type is one of `types`, `purchase` read as the event's tenant's purchase types. -#}
{% macro event_type_in(types, bind, purchases) -%}
    {%- set expand = purchases and 'purchase' in types -%}
    {%- set tenants = (purchases.get('tenants') or {}) if expand else {} -%}
    {%- set plain = [] -%}
    {%- for name in types if name not in plain and not (expand and name == 'purchase') -%}{%- do plain.append(name) -%}{%- endfor -%}
    {%- if expand and not tenants -%}
        {%- for real in purchases['default'] if real not in plain -%}{%- do plain.append(real) -%}{%- endfor -%}
    {%- endif -%}
    {%- set parts = [] -%}
    {%- if plain -%}{%- do parts.append('event_type in (' ~ event_types_bound(plain, bind, none) ~ ')') -%}{%- endif -%}
    {%- if expand and tenants -%}
        {%- set whens = [] -%}
        {%- for tenant, own in tenants | dictsort -%}
            {%- do whens.append('when ' ~ bind(tenant | string) ~ ' then event_type in (' ~ event_types_bound(own, bind, none) ~ ')') -%}
        {%- endfor -%}
        {%- do parts.append('case tenant_id ' ~ whens | join(' ') ~ ' else event_type in (' ~ event_types_bound(purchases['default'], bind, none) ~ ') end') -%}
    {%- endif -%}
    ({{ parts | join(' or ') }})
{%- endmacro %}

{#- The event matches a step (or exclusion): its type, and each `where` field equal to one of the listed values. -#}
{% macro funnel_condition(step, bind, dialect, purchases=none) -%}
    {%- set parts = [event_type_in([step['event_type'] | string], bind, purchases)] -%}
    {%- for field, values in (step.get('where') or {}) | dictsort -%}
        {%- set listed = [] -%}
        {%- for value in ([values] if values is string or values is not iterable else values) -%}
            {%- do listed.append(bind(value | string)) -%}
        {%- endfor -%}
        {%- do parts.append(funnel_field(field, dialect) ~ ' in (' ~ listed | join(', ') ~ ')') -%}
    {%- endfor -%}
    coalesce({{ parts | join(' and ') }}, false)
{%- endmacro %}

{#- Seconds of the window: an integer, or a duration such as 30m, 24h or 7d as written in dbt_project.yml. -#}
{% macro funnel_window_seconds(window) -%}
    {%- set units = {'s': 1, 'm': 60, 'h': 3600, 'd': 86400} -%}
    {%- set text = window | string | trim -%}
    {%- if window is number and window is not boolean -%}
        {{ window | int }}
    {%- elif text[-1:] in units and text[:-1] | trim | length and (text[:-1] | trim).isdigit() -%}
        {{ (text[:-1] | trim | int) * units[text[-1:]] }}
    {%- else -%}
        {{ funnel_fail('window: ' ~ text ~ ' is not a duration such as 30m, 24h or 7d') }}
    {%- endif -%}
{%- endmacro %}

{#-
    An entry's status at `as_of_us` (SQL expressions; times in epoch microseconds): excluded when
    every attempt of the day was, converted when it reached step n, pending while `open_until` (the
    end of the window of the day's latest valid attempt) is after `as_of_us`, else dropped. The
    engine's entry rows and fct_funnel_daily (reading fct_funnel_entries) both decide it here.
-#}
{% macro funnel_status(all_excluded, depth, n, open_until, as_of_us) -%}
    case
            when {{ all_excluded }} then 'excluded'
            when {{ depth }} = {{ n }} then 'converted'
            when {{ open_until }} > {{ as_of_us }} then 'pending'
            else 'dropped'
        end
{%- endmacro %}

{#-
    The CTEs (without `with`) ending in funnel_entry_rows: one row per tenant, user and UTC day of
    the counted attempt's start, with the attempt's step times as epoch microseconds (t_1 .. t_n,
    null past its depth), its depth, status, whether every attempt of that day was excluded
    (is_excluded), and open_until: the end of the window of the day's latest valid attempt (null
    when none is valid), which decides whether the entry is still pending at a later time.
    `breakdowns`: the columns carried from the first step's event (default: the funnel's own).
-#}
{% macro funnel_entry_ctes(events, funnel, start, end, as_of, bind, dialect='duckdb', breakdowns=none) -%}
    {%- if dialect not in ['duckdb', 'bigquery'] -%}{{ funnel_fail('dialect must be duckdb or bigquery, not ' ~ dialect) }}{%- endif -%}
    {%- set steps = funnel['steps'] | list -%}
    {%- set n = steps | length -%}
    {%- set order = funnel.get('order') or 'ordered' -%}
    {%- set window_s = funnel_window_seconds(funnel['window']) | int -%}
    {%- set w_us = window_s * 1000000 -%}
    {%- set hold = funnel.get('hold_constant') -%}
    {%- set columns = ((funnel.get('breakdowns') or []) if breakdowns is none else breakdowns) | list -%}
    {%- set exclusions = (funnel.get('exclusions') or []) | list -%}
    {%- set start_us = funnel_epoch_us(start, dialect) -%}
    {%- set end_us = funnel_epoch_us(end, dialect) -%}
    {%- set as_of_us = funnel_epoch_us(as_of, dialect) -%}
    {%- set user = 'tenant_id, user_key' -%}
    {%- set lane = user ~ (', hold_value' if hold else '') -%}
    {%- set after = 'range between 1 following and unbounded following' -%}

    {#- Checks of what gets pasted, and of the rules the SQL relies on (analytics_core/funnels.py checks them all). -#}
    {%- if n < 2 or n > 10 -%}{{ funnel_fail('a funnel has 2 to 10 steps') }}{%- endif -%}
    {%- if order not in ['ordered', 'strict', 'any'] -%}{{ funnel_fail('order must be ordered, strict or any') }}{%- endif -%}
    {%- for column in columns if column not in ['country', 'device', 'page', 'library'] -%}
        {{ funnel_fail(column ~ ' is not a breakdown dimension (country, device, page, library)') }}
    {%- endfor -%}
    {%- set spans = [] -%}
    {%- for exclusion in exclusions -%}
        {%- set between = exclusion.get('between') or [1, n] -%}
        {%- if not (1 <= between[0] | int < between[1] | int <= n) -%}
            {{ funnel_fail('exclusions: between must be two step numbers 1 <= i < j <= ' ~ n) }}
        {%- endif -%}
        {%- do spans.append([between[0] | int, between[1] | int]) -%}
    {%- endfor -%}
    {%- set types = [] -%}
    {%- for step in steps + exclusions if step['event_type'] | string not in types -%}
        {%- do types.append(step['event_type'] | string) -%}
    {%- endfor -%}
    {%- if order == 'any' and (steps | map(attribute='event_type') | unique | list | length) != n -%}
        {{ funnel_fail('an any-order funnel needs a different event type for each step') }}
    {%- endif -%}

    {#- Each event, its time, and which steps and exclusions it matches (match_k, x_e). -#}
    {%- set event_columns = ['tenant_id', 'user_key', 'event_id', funnel_epoch_us('event_at', dialect) ~ ' as ts'] -%}
    {%- for column in columns -%}{%- do event_columns.append(column) -%}{%- endfor -%}
    {%- if hold -%}{%- do event_columns.append(funnel_field(hold, dialect) ~ ' as hold_value') -%}{%- endif -%}
    {%- for step in steps -%}
        {%- do event_columns.append(funnel_condition(step, bind, dialect, funnel.get('purchases')) ~ ' as match_' ~ loop.index) -%}
    {%- endfor -%}
    {%- for exclusion in exclusions -%}
        {%- do event_columns.append(funnel_condition(exclusion, bind, dialect, funnel.get('purchases')) ~ ' as x_' ~ loop.index) -%}
    {%- endfor -%}

funnel_events as (

    select
        {{ event_columns | join(',\n        ') }}
    from {{ events }} as funnel_source
    where
        is_bot is not true
        and user_key is not null
        and event_at >= {{ start }}
        and event_at <= {{ funnel_add_seconds(end, window_s, dialect) }}
        {%- if order != 'strict' %}
        -- (only the types used; a strict funnel keeps all: any other event between two steps breaks it)
        and event_type in ({{ event_types_bound(types, bind, funnel.get('purchases')) }})
        {%- endif %}

),

-- The user's events in order of time, then event_id: ties are broken the same way everywhere.
-- m_k: the event can be step k (a later step's also needs a held value to share).
funnel_sequenced as (

    select
        funnel_events.*,
        {%- for k in range(1, n + 1) %}
        match_{{ k }}{{ ' and hold_value is not null' if hold and k > 1 }} as m_{{ k }},
        {%- endfor %}
        row_number() over (partition by {{ user }} order by ts, event_id) as seq
    from funnel_events

),

{%- set lookups = [] -%}
{%- if order != 'any' -%}
    {#- The earliest event of step k strictly after this event's time, in the held value's lane (seq orders by time, then event_id). -#}
    {%- for k in range(2, n + 1) -%}
        {%- do lookups.append('min(case when m_' ~ k ~ ' then seq end) over (partition by ' ~ lane ~ ' order by ts ' ~ after ~ ') as after_seq_' ~ k) -%}
    {%- endfor -%}
    {#- How many events of the lane share this event's time (more than one: a step may be among them). -#}
    {%- do lookups.append('count(*) over (partition by ' ~ lane ~ ' order by ts range between current row and current row) as ties') -%}
{%- endif -%}
{%- if order == 'strict' -%}
    {%- do lookups.append('min(ts) over (partition by ' ~ user ~ ' order by ts ' ~ after ~ ') as next_ts') -%}
{%- endif -%}
{%- for span in spans -%}
    {%- do lookups.append('min(case when x_' ~ loop.index ~ ' then ts end) over (partition by ' ~ user ~ ' order by ts ' ~ after ~ ') as x_after_' ~ loop.index) -%}
{%- endfor %}

-- What each event's row needs to find what follows it, each one window over the user's events.
funnel_lookups as (

    select
        {{ (['funnel_sequenced.*'] + lookups) | join(',\n        ') }}
    from funnel_sequenced

),

{%- set first_columns = ['tenant_id', 'user_key', 'seq as s_1', 'ts as t_1'] + columns + (['hold_value'] if hold else []) -%}
{%- set base = ['tenant_id', 'user_key', 's_1', 't_1'] + columns + (['hold_value'] if hold else []) -%}
{%- set in_range = 'm_1 and ts >= ' ~ start_us ~ ' and ts < ' ~ end_us -%}

{%- if order == 'any' %}
{%- set reach = [] -%}
{%- for k in range(2, n + 1) -%}
    {%- do reach.append('min(case when m_' ~ k ~ ' then ts end) over (partition by ' ~ lane ~ ' order by ts range between current row and unbounded following) as first_ts_' ~ k) -%}
    {%- for span in spans -%}
        {#- After the time of step k's event, the next exclusion event: x_after only grows with time, so the min over the lane is its value there. -#}
        {%- if span[0] > 1 -%}{%- do reach.append('min(case when m_' ~ k ~ ' then x_after_' ~ loop.index ~ ' end) over (partition by ' ~ lane ~ ' order by ts range between current row and unbounded following) as first_x_' ~ k ~ '_' ~ loop.index) -%}{%- endif -%}
    {%- endfor -%}
{%- endfor -%}
{%- set reached = [] -%}
{%- for k in range(2, n + 1) -%}
    {%- do reached.append('case when first_ts_' ~ k ~ ' <= ts + ' ~ w_us ~ ' then first_ts_' ~ k ~ ' end as r_' ~ k) -%}
    {%- for span in spans -%}
        {%- if span[0] > 1 -%}
            {%- do reached.append('case when first_ts_' ~ k ~ ' <= ts + ' ~ w_us ~ ' then first_x_' ~ k ~ '_' ~ loop.index ~ ' end as rx_' ~ k ~ '_' ~ loop.index) -%}
        {%- elif k == 2 -%}
            {%- do reached.append('x_after_' ~ loop.index ~ ' as rx_1_' ~ loop.index) -%}
        {%- endif -%}
    {%- endfor -%}
{%- endfor -%}
{%- set positions = [] -%}
{%- for k in range(2, n + 1) -%}
    {%- set earlier = [] -%}
    {%- for m in range(2, n + 1) if m != k -%}
        {%- do earlier.append('case when r_' ~ m ~ ' < r_' ~ k ~ (' or r_' ~ m ~ ' = r_' ~ k if m < k else '') ~ ' then 1 else 0 end') -%}
    {%- endfor -%}
    {%- do positions.append('case when r_' ~ k ~ ' is not null then 2 + ' ~ (earlier | join(' + ') or '0') ~ ' end as pos_' ~ k) -%}
{%- endfor -%}
{%- set depth_terms = [] -%}
{%- for k in range(2, n + 1) -%}{%- do depth_terms.append('case when r_' ~ k ~ ' is not null then 1 else 0 end') -%}{%- endfor -%}
{%- set attempt_columns = base + ['1 + ' ~ depth_terms | join(' + ') ~ ' as depth'] -%}
{%- for j in range(2, n + 1) -%}
    {%- set picks = [] -%}
    {%- for k in range(2, n + 1) -%}{%- do picks.append('when pos_' ~ k ~ ' = ' ~ j ~ ' then r_' ~ k) -%}{%- endfor -%}
    {%- do attempt_columns.append('case ' ~ picks | join(' ') ~ ' end as t_' ~ j) -%}
{%- endfor -%}
{%- for span in spans -%}
    {%- set e = loop.index -%}
    {%- if span[0] == 1 -%}
        {%- do attempt_columns.append('rx_1_' ~ e ~ ' as xa_' ~ e) -%}
    {%- else -%}
        {%- set picks = [] -%}
        {%- for k in range(2, n + 1) -%}{%- do picks.append('when pos_' ~ k ~ ' = ' ~ span[0] ~ ' then rx_' ~ k ~ '_' ~ e) -%}{%- endfor -%}
        {%- do attempt_columns.append('case ' ~ picks | join(' ') ~ ' end as xa_' ~ e) -%}
    {%- endif -%}
{%- endfor %}

-- Any order: from each event, the earliest event of each later step at or after its time.
funnel_reach as (

    select
        {{ (['funnel_lookups.*'] + reach) | join(',\n        ') }}
    from funnel_lookups

),

-- An attempt per first-step event in range: the later steps it reaches within the window.
funnel_any_reached as (

    select
        {{ (first_columns + reached) | join(',\n        ') }}
    from funnel_reach
    where {{ in_range }}

),

-- Each reached step's rank among the reached times (ties by step number): the k-th reached time is the k-th smallest.
funnel_any_ranked as (

    select
        {{ (['funnel_any_reached.*'] + positions) | join(',\n        ') }}
    from funnel_any_reached

),

funnel_attempts as (

    select
        {{ attempt_columns | join(',\n        ') }}
    from funnel_any_ranked

),

{%- else %}
{#- Ordered and strict: an attempt moves on step by step; `cur_*` and `nxt_*` are read from the row of its last reached event. -#}
{%- set pointer = ['ts as cur_ts', 'ties as cur_ties', 'after_seq_2 as nxt_seq'] + (['next_ts as cur_next_ts'] if order == 'strict' else []) -%}
{%- set stage_columns = first_columns + ['1 as depth'] + pointer -%}
{%- for span in spans -%}
    {%- do stage_columns.append(('x_after_' ~ loop.index if span[0] == 1 else funnel_null_int(dialect)) ~ ' as xa_' ~ loop.index) -%}
{%- endfor %}

-- An attempt per first-step event in range.
funnel_stage_1 as (

    select
        {{ stage_columns | join(',\n        ') }}
    from funnel_lookups
    where {{ in_range }}

),
{%- set carried = base + [] -%}
{%- for span in spans -%}{%- do carried.append('xa_' ~ loop.index) -%}{%- endfor -%}
{%- for k in range(2, n + 1) -%}
    {%- set used = [] -%}
    {%- for j in range(1, k) -%}{%- do used.append('attempts.s_' ~ j) -%}{%- endfor -%}
    {#- Reached: the candidate is at the previous step's time, or later but within the window (strict: with no other event between). -#}
    {%- set reached = 'steps.at_same_time or (events.ts <= steps.t_1 + ' ~ w_us ~ (' and events.ts = steps.cur_next_ts' if order == 'strict' else '') ~ ')' -%}
    {%- set taken = 'case when ' ~ reached ~ ' then events.' -%}
    {%- set next_columns = [taken ~ 'seq end as s_' ~ k, taken ~ 'ts end as t_' ~ k, 'case when ' ~ reached ~ ' then ' ~ k ~ ' else steps.depth end as depth'] -%}
    {%- for column in carried -%}
        {%- if column.startswith('xa_') and spans[column[3:] | int - 1][0] == k -%}
            {%- do next_columns.append(taken ~ 'x_after_' ~ column[3:] ~ ' end as ' ~ column) -%}
        {%- else -%}
            {%- do next_columns.append('steps.' ~ column) -%}
        {%- endif -%}
    {%- endfor -%}
    {%- if k < n -%}
        {%- do next_columns.extend([taken ~ 'ts end as cur_ts', taken ~ 'ties end as cur_ties', taken ~ 'after_seq_' ~ (k + 1) ~ ' end as nxt_seq']) -%}
        {%- if order == 'strict' -%}{%- do next_columns.append(taken ~ 'next_ts end as cur_next_ts') -%}{%- endif -%}
    {%- endif %}

-- Step {{ k }}, at the time of step {{ k - 1 }}: the first event of the step not already used by this attempt.
funnel_same_{{ k }} as (

    select
        attempts.tenant_id,
        attempts.user_key,
        attempts.s_1,
        min(events.seq) as same_seq
    from funnel_stage_{{ k - 1 }} as attempts
    inner join funnel_lookups as events
        on
            attempts.tenant_id = events.tenant_id
            and attempts.user_key = events.user_key
            and attempts.cur_ts = events.ts
            {%- if hold %}
            and attempts.hold_value = events.hold_value
            {%- endif %}
    where
        attempts.depth = {{ k - 1 }}
        and attempts.cur_ties > 1
        and events.m_{{ k }}
        and events.seq not in ({{ used | join(', ') }})
    group by attempts.tenant_id, attempts.user_key, attempts.s_1

),

-- Else the earliest event of step {{ k }} after that time.
funnel_step_{{ k }} as (

    select
        attempts.*,
        same.same_seq is not null as at_same_time,
        case when attempts.depth = {{ k - 1 }} then coalesce(same.same_seq, attempts.nxt_seq) end as candidate
    from funnel_stage_{{ k - 1 }} as attempts
    left join funnel_same_{{ k }} as same
        on
            attempts.tenant_id = same.tenant_id
            and attempts.user_key = same.user_key
            and attempts.s_1 = same.s_1

),

funnel_stage_{{ k }} as (

    select
        {{ next_columns | join(',\n        ') }}
    from funnel_step_{{ k }} as steps
    left join funnel_lookups as events
        on
            steps.tenant_id = events.tenant_id
            and steps.user_key = events.user_key
            and steps.candidate = events.seq

),
    {%- do carried.extend(['s_' ~ k, 't_' ~ k]) -%}
{%- endfor %}

funnel_attempts as (

    select
        {{ (base + ['depth']) | join(',\n        ') }}
        {%- for k in range(2, n + 1) %},
        t_{{ k }}
        {%- endfor %}
        {%- for span in spans %},
        xa_{{ loop.index }}
        {%- endfor %}
    from funnel_stage_{{ n }}

),
{%- endif %}

{%- set invalid = [] -%}
{%- for span in spans -%}
    {#- The next exclusion event after step i's time, before step j's time when reached, else within the window. -#}
    {%- do invalid.append(
        '(depth >= ' ~ span[0] ~ ' and xa_' ~ loop.index ~ ' is not null and case when depth >= ' ~ span[1]
        ~ ' then xa_' ~ loop.index ~ ' < t_' ~ span[1] ~ ' else xa_' ~ loop.index ~ ' <= t_1 + ' ~ w_us ~ ' end)'
    ) -%}
{%- endfor %}

-- An attempt is invalid when an exclusion event falls inside one of its spans.
funnel_checked as (

    select
        funnel_attempts.*,
        {{ 'coalesce(' ~ invalid | join(' or ') ~ ', false)' if invalid else 'false' }} as is_excluded,
        {{ funnel_day_number('t_1', dialect) }} as day_number
    from funnel_attempts

),

-- Per user and day: the deepest valid attempt, the latest among equally deep ones (excluded ones only when all are).
funnel_ranked as (

    select
        funnel_checked.*,
        row_number() over user_day as pick,
        max(case when not is_excluded then t_1 end) over user_day_all as last_valid_start,
        min(case when is_excluded then 1 else 0 end) over user_day_all as all_excluded
    from funnel_checked
    {#- One ordering for the three, so the events are sorted once. #}
    window
        user_day as (
            partition by tenant_id, user_key, day_number
            order by case when is_excluded then 0 else 1 end desc, depth desc, t_1 desc, s_1 desc
        ),
        user_day_all as (user_day rows between unbounded preceding and unbounded following)

),

funnel_entry_rows as (

    select
        tenant_id,
        {{ funnel_date_of_us('t_1', dialect) }} as cohort_day,
        user_key,
        {%- for column in columns %}
        {{ column }},
        {%- endfor %}
        depth,
        {%- for k in range(1, n + 1) %}
        t_{{ k }},
        {%- endfor %}
        {{ funnel_status('all_excluded = 1', 'depth', n, 'last_valid_start + ' ~ w_us, as_of_us) }} as status,
        all_excluded = 1 as is_excluded,
        last_valid_start + {{ w_us }} as open_until
    from funnel_ranked
    where pick = 1

)
{%- endmacro %}

{#-
    One row per tenant, cohort day (UTC day of the counted attempt's start) and user: started_at,
    the breakdown columns (the first step's values), depth, step_1_at .. step_n_at (null past the
    depth), status (converted, pending, dropped or excluded) and excluded.
-#}
{% macro funnel_entries(events, funnel, start, end, as_of, bind, dialect='duckdb', breakdowns=none) -%}
    {%- set n = funnel['steps'] | length -%}
    {%- set columns = ((funnel.get('breakdowns') or []) if breakdowns is none else breakdowns) | list -%}
with
{{ funnel_entry_ctes(events, funnel, start, end, as_of, bind, dialect, breakdowns) }},

final as (

    select
        tenant_id,
        cohort_day,
        user_key,
        {{ funnel_timestamp_of_us('t_1', dialect) }} as started_at,
        {%- for column in columns %}
        {{ column }},
        {%- endfor %}
        depth,
        {%- for k in range(1, n + 1) %}
        {{ funnel_timestamp_of_us('t_' ~ k, dialect) }} as step_{{ k }}_at,
        {%- endfor %}
        status,
        is_excluded as excluded
    from funnel_entry_rows

)

select * from final
{%- endmacro %}

{#-
    One row per tenant, cohort day (none when by_day is false: the whole range, each user counted
    once per day they entered) and breakdown values: entered (users counted, excluded ones not),
    reached_1 .. reached_n (depth >= k), pending and pending_at_1 .. pending_at_{n-1} (by depth),
    excluded, and median_s_2 .. median_s_n, p90_s_2 .. p90_s_n: seconds from step k-1 to step k
    over the entries that reached k, interpolated linearly between order statistics (numpy's
    default quantile), with row_number and count so that both warehouses compute the same.
    Over the engine's entry rows of `events`; funnel_summary_of_entries aggregates entry rows read
    from elsewhere (fct_funnel_daily: from fct_funnel_entries) with the same CTEs.
-#}
{% macro funnel_summary(events, funnel, start, end, as_of, bind, dialect='duckdb', breakdowns=none, by_day=true) -%}
with
{{ funnel_entry_ctes(events, funnel, start, end, as_of, bind, dialect, breakdowns) }},

{{ funnel_summary_ctes('funnel_entry_rows', funnel, dialect, breakdowns, by_day) }}

select * from final
{%- endmacro %}

{#-
    funnel_summary over `entry_rows` (a table name or a parenthesised subquery) shaped like
    funnel_entry_rows: tenant_id, cohort_day, the breakdown columns, depth, t_1 .. t_n (epoch
    microseconds), status and is_excluded.
-#}
{% macro funnel_summary_of_entries(entry_rows, funnel, dialect='duckdb', breakdowns=none, by_day=true) -%}
with
{{ funnel_summary_ctes(entry_rows, funnel, dialect, breakdowns, by_day) }}

select * from final
{%- endmacro %}

{#- The summary's CTEs (without `with`, ending in final) over `entry_rows`: the one aggregation both use. -#}
{% macro funnel_summary_ctes(entry_rows, funnel, dialect='duckdb', breakdowns=none, by_day=true) -%}
    {%- set n = funnel['steps'] | length -%}
    {%- set columns = ((funnel.get('breakdowns') or []) if breakdowns is none else breakdowns) | list -%}
    {%- set keys = ['tenant_id'] + (['cohort_day'] if by_day else []) + columns -%}
    {%- set group = keys | join(', ') -%}
    {%- set quantiles = [['median', '0.5'], ['p90', '0.9']] -%}
    {%- if dialect not in ['duckdb', 'bigquery'] -%}{{ funnel_fail('dialect must be duckdb or bigquery, not ' ~ dialect) }}{%- endif -%}
    {%- for column in columns if column not in ['country', 'device', 'page', 'library'] -%}
        {{ funnel_fail(column ~ ' is not a breakdown dimension (country, device, page, library)') }}
    {%- endfor %}
funnel_durations as (

    select
        {{ group }},
        depth,
        status,
        is_excluded
        {%- for k in range(2, n + 1) %},
        case
            when not is_excluded and depth >= {{ k }}
                then {{ funnel_double('t_' ~ k ~ ' - t_' ~ (k - 1), dialect) }} / 1000000
        end as d_{{ k }}
        {%- endfor %}
    from {{ entry_rows }} as funnel_entry_rows

),

-- Each duration's rank among its group's (nulls last), and how many there are.
funnel_ranked_durations as (

    select
        funnel_durations.*
        {%- for k in range(2, n + 1) %},
        row_number() over (
            partition by {{ group }} order by case when d_{{ k }} is null then 1 else 0 end, d_{{ k }}
        ) as rank_{{ k }},
        count(d_{{ k }}) over (partition by {{ group }}) as count_{{ k }}
        {%- endfor %}
    from funnel_durations

),

-- The order statistics either side of each quantile's virtual index (count - 1) * q.
funnel_groups as (

    select
        {{ group }},
        sum(case when not is_excluded then 1 else 0 end) as entered,
        {%- for k in range(1, n + 1) %}
        sum(case when not is_excluded and depth >= {{ k }} then 1 else 0 end) as reached_{{ k }},
        {%- endfor %}
        sum(case when status = 'pending' then 1 else 0 end) as pending,
        {%- for k in range(1, n) %}
        sum(case when status = 'pending' and depth = {{ k }} then 1 else 0 end) as pending_at_{{ k }},
        {%- endfor %}
        sum(case when is_excluded then 1 else 0 end) as excluded
        {%- for k in range(2, n + 1) %},
        max(count_{{ k }}) as count_{{ k }}
            {%- for name, q in quantiles %}
                {%- set index = funnel_double('count_' ~ k ~ ' - 1', dialect) ~ ' * ' ~ funnel_double(q, dialect) %},
        max(case when rank_{{ k }} = floor({{ index }}) + 1 then d_{{ k }} end) as {{ name }}_low_{{ k }},
        max(case when rank_{{ k }} = floor({{ index }}) + 2 then d_{{ k }} end) as {{ name }}_high_{{ k }},
        max({{ index }} - floor({{ index }})) as {{ name }}_gamma_{{ k }}
            {%- endfor %}
        {%- endfor %}
    from funnel_ranked_durations
    group by {{ group }}

),

final as (

    select
        {{ group }},
        entered,
        {%- for k in range(1, n + 1) %}
        reached_{{ k }},
        {%- endfor %}
        pending,
        {%- for k in range(1, n) %}
        pending_at_{{ k }},
        {%- endfor %}
        excluded
        {%- for name, q in quantiles %}
            {%- for k in range(2, n + 1) %}
                {%- set low = name ~ '_low_' ~ k %}
                {%- set high = name ~ '_high_' ~ k %}
                {%- set gamma = name ~ '_gamma_' ~ k %},
        {#- numpy's lerp: from the nearer end, so the interpolation matches it to the last bit. #}
        case
            when count_{{ k }} = 0 then null
            when {{ high }} is null then {{ low }}
            when {{ gamma }} >= 0.5 then {{ high }} - ({{ high }} - {{ low }}) * (1 - {{ gamma }})
            else {{ low }} + ({{ high }} - {{ low }}) * {{ gamma }}
        end as {{ name }}_s_{{ k }}
            {%- endfor %}
        {%- endfor %}
    from funnel_groups

)
{%- endmacro %}

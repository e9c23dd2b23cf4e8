{#-
    Metric definitions and the history they built (docs/ROLLUPS.md, "When a metric's definition
    changes").

    Every stored metric (count, sum, unique) has a fingerprint: a short hash of its definition's
    canonical JSON, built here and in analytics_core/catalogue.py (Catalogue.metric_definition)
    from the same YAML. The table fct_metric_definitions holds, per metric and granularity, the
    fingerprint the rollups of that grain were built by over all their history. Each rollup model
    writes its grain's rows in a post-hook (sync_metric_definitions), inside the transaction of its
    own rows, so the record never runs ahead of or behind the rows it describes. A metric whose
    fingerprint there differs from the catalogue's (a new metric, a changed definition, or one
    named in the var rebuild_metric_history) is rebuilt by that post-hook over all history, one
    slice of `metric_rebuild_slice_days` days per statement; metrics no longer in the catalogue lose
    their rows. fct_warehouse_watermarks republishes the fingerprints per tenant and grain, which
    is where the query API reads them (with the watermark, in the same read).
-#}

{#- Names of the metrics kept in the rollups (count, sum, unique), in catalogue order. -#}
{% macro stored_metric_names() -%}
    {{ return(catalogue_metrics(['count', 'sum', 'unique']) | map(attribute=0) | list) }}
{%- endmacro %}

{#- Canonical JSON of everything that decides a stored metric's numbers (see Catalogue.metric_definition). -#}
{% macro metric_definition(name) -%}
    {%- set catalogue = var('metric_catalogue') -%}
    {%- set metric = catalogue['metrics'][name] -%}
    {%- set kind = metric['kind'] -%}
    {%- set sets = catalogue['dimension_sets'] -%}
    {%- if kind == 'unique' -%}{%- set sets = catalogue.get('sketch_dimension_sets') or sets -%}{%- endif -%}
    {%- set body = {
        'metric': {
            'kind': kind,
            'humans_only': true if metric.get('humans_only', true) else false,
            'event_types': (metric.get('event_types') or []) | unique | sort | list,
            'column': metric.get('column') if kind in ['sum', 'unique'] else none,
        },
        'dimension_sets': sets,
        'logic_version': var('metric_logic_version') | int,
    } -%}
    {%- if kind == 'unique' -%}{%- do body.update({'hll_precision': var('hll_precision') | int}) -%}{%- endif -%}
    {%- if 'purchase' in (metric.get('event_types') or []) -%}{%- do body.update({'purchases': purchase_types()}) -%}{%- endif -%}
    {{ return(tojson(body, sort_keys=true)) }}
{%- endmacro %}

{% macro metric_fingerprint(name) -%}
    {{ return(local_md5(metric_definition(name))[:16]) }}
{%- endmacro %}

{#- Stored metric -> fingerprint, as `dbt run-operation print_metric_fingerprints` prints it (JSON). -#}
{% macro metric_fingerprints() -%}
    {%- set out = {} -%}
    {%- for name in stored_metric_names() -%}{%- do out.update({name: metric_fingerprint(name)}) -%}{%- endfor -%}
    {{ return(out) }}
{%- endmacro %}

{% macro print_metric_fingerprints() -%}
    {{ print(tojson(metric_fingerprints(), sort_keys=true)) }}
{%- endmacro %}

{#- The table of the definitions each grain's rollups were built by, beside the model's own table. -#}
{% macro metric_definitions_relation() -%}
    {{ return(api.Relation.create(database=this.database, schema=this.schema, identifier='fct_metric_definitions')) }}
{%- endmacro %}

{% macro create_metric_definitions() -%}
    create table if not exists {{ metric_definitions_relation() }} (
        metric {{ dbt.type_string() }},
        granularity {{ dbt.type_string() }},
        fingerprint {{ dbt.type_string() }},
        definition {{ dbt.type_string() }},
        history_from {{ timestamp_type() }},
        history_until {{ timestamp_type() }},
        slices {{ dbt.type_int() }},
        built_at {{ timestamp_type() }}
    )
{%- endmacro %}

{#- Create fct_metric_definitions unless it exists, and tell dbt's relation cache (a hook, not dbt, made it). -#}
{% macro ensure_metric_definitions() -%}
    {%- if execute -%}
        {%- do run_query(create_metric_definitions()) -%}
        {%- do adapter.cache_added(metric_definitions_relation().incorporate(type='table')) -%}
    {%- endif -%}
    {{ return('') }}
{%- endmacro %}

{% macro timestamp_type() -%}
    {{ return(adapter.dispatch('timestamp_type', 'analytics')()) }}
{%- endmacro %}

{% macro default__timestamp_type() %}timestamp{% endmacro %}

{% macro duckdb__timestamp_type() %}timestamptz{% endmacro %}

{#- Whether this model's history logic applies: executing a real model, not parsing or a dbt unit test. -#}
{% macro tracks_metric_definitions() -%}
    {{ return(execute and model.resource_type == 'model') }}
{%- endmacro %}

{#- metric -> fingerprint that `grain`'s rollups were built by ({} before the table exists). -#}
{% macro built_definitions(grain) -%}
    {%- set relation = metric_definitions_relation() -%}
    {%- if adapter.get_relation(relation.database, relation.schema, relation.identifier) is none -%}
        {{ return({}) }}
    {%- endif -%}
    {%- set rows = run_query(
        'select metric, fingerprint from ' ~ relation ~ ' where granularity = ' ~ dbt.string_literal(grain)
    ) -%}
    {%- set built = {} -%}
    {%- for row in rows -%}{%- do built.update({row[0]: row[1]}) -%}{%- endfor -%}
    {{ return(built) }}
{%- endmacro %}

{#-
    metric -> the fingerprint `grain`'s rollups should hold: the catalogue's for grains built from
    the events; for a grain built from another rollup (`source_grain`), whatever that one holds
    (the day rollups can be no newer than the hours they merge).
-#}
{% macro wanted_definitions(grain, source_grain=none) -%}
    {%- if source_grain is none -%}{{ return(metric_fingerprints()) }}{%- endif -%}
    {%- set source = built_definitions(source_grain) -%}
    {%- set wanted = {} -%}
    {%- for name in stored_metric_names() if name in source -%}{%- do wanted.update({name: source[name]}) -%}{%- endfor -%}
    {{ return(wanted) }}
{%- endmacro %}

{#- The metrics named by the var rebuild_metric_history (a name, a list, or "all"), checked. -#}
{% macro forced_rebuilds() -%}
    {%- set value = var('rebuild_metric_history') or [] -%}
    {%- set names = [value] if value is string else value -%}
    {%- if 'all' in names -%}{{ return(stored_metric_names()) }}{%- endif -%}
    {%- for name in names if name not in stored_metric_names() -%}
        {{ exceptions.raise_compiler_error(
            "rebuild_metric_history names " ~ name ~ ", which is not a count, sum or unique metric of the catalogue"
        ) }}
    {%- endfor -%}
    {{ return(names) }}
{%- endmacro %}

{#-
    Metrics whose history this incremental build of `grain` rebuilds: not built by the definition
    wanted, or named in rebuild_metric_history. None on a first build or a full refresh (the
    model's own statement then builds every metric over all history).
-#}
{% macro stale_metrics(grain, source_grain=none) -%}
    {%- if not tracks_metric_definitions() or not is_incremental() -%}{{ return([]) }}{%- endif -%}
    {%- set built = built_definitions(grain) -%}
    {%- set wanted = wanted_definitions(grain, source_grain) -%}
    {%- set forced = forced_rebuilds() -%}
    {%- set stale = [] -%}
    {%- for name in stored_metric_names() if name in wanted -%}
        {%- if built.get(name) != wanted[name] or name in forced -%}{%- do stale.append(name) -%}{%- endif -%}
    {%- endfor -%}
    {{ return(stale) }}
{%- endmacro %}

{%- macro _quoted(names) -%}
    {%- set quoted = [] -%}
    {%- for name in names -%}{%- do quoted.append(dbt.string_literal(name)) -%}{%- endfor -%}
    {{ return(quoted | join(', ')) }}
{%- endmacro %}

{#- 'YYYY-MM-DD' of a value from run_query (a date, a datetime or their text), or none. -#}
{%- macro _day_of(value) -%}
    {{ return((value | string)[:10] if value is not none else none) }}
{%- endmacro %}

{#-
    Post-hook of each rollup model, inside its transaction: rebuild the stale metrics over all
    history in slices, drop the rows of metrics no longer in the catalogue, and record what the
    grain's rollups now hold. `source_grain`: the rollup this grain is merged from (none: events).
    Returns no SQL: every statement is run here, between the progress lines it logs.
-#}
{% macro sync_metric_definitions(grain, source_grain=none, retention_days=none) %}
    {%- if not tracks_metric_definitions() -%}{{ return('') }}{%- endif -%}
    {%- do ensure_metric_definitions() -%}
    {%- set definitions = metric_definitions_relation() -%}
    {%- set incremental = is_incremental() -%}
    {%- set stored = stored_metric_names() -%}
    {%- set built = built_definitions(grain) -%}
    {%- set wanted = wanted_definitions(grain, source_grain) -%}
    {%- set stale = stale_metrics(grain, source_grain) if incremental else [] -%}
    {%- set removed = [] -%}
    {%- for name in built if name not in stored or name not in wanted -%}{%- do removed.append(name) -%}{%- endfor -%}
    {%- set rebuilt = stale if incremental else (wanted.keys() | list) -%}
    {%- set bounds = {'from': none, 'until': none, 'slices': 0} -%}

    {%- if incremental and (stale or removed) and stored -%}
        {%- do run_query(
            'delete from ' ~ this ~ ' where metric not in (' ~ _quoted(stored) ~ ')'
            ~ (' or metric in (' ~ _quoted(stale) ~ ')' if stale else '')
        ) -%}
    {%- endif -%}

    {%- if rebuilt -%}
        {%- if source_grain is none -%}
            {%- set span = run_query(
                'select min(event_at), max(event_at) from ' ~ ref('stg_tracking__events')
            ) -%}
        {%- else -%}
            {%- set span = run_query(
                'select min(window_start), max(window_start) from ' ~ ref('fct_metrics_' ~ source_grain)
                ~ ' where metric in (' ~ _quoted(rebuilt) ~ ')'
            ) -%}
        {%- endif -%}
        {%- set first_day = _day_of(span.rows[0][0]) if span.rows | length else none -%}
        {%- set last_day = _day_of(span.rows[0][1]) if span.rows | length else none -%}
        {%- if first_day is not none and retention_days -%}
            {%- set kept_from = (run_started_at - modules.datetime.timedelta(days=retention_days)).strftime('%Y-%m-%d') -%}
            {%- set first_day = [first_day, kept_from] | max -%}
        {%- endif -%}
        {%- if first_day is not none and first_day <= last_day -%}
            {%- set start = modules.datetime.datetime.strptime(first_day, '%Y-%m-%d') -%}
            {%- set end = modules.datetime.datetime.strptime(last_day, '%Y-%m-%d') + modules.datetime.timedelta(days=1) -%}
            {%- set step = modules.datetime.timedelta(days=[var('metric_rebuild_slice_days') | int, 1] | max) -%}
            {%- set total = (((end - start).days + step.days - 1) // step.days) | int -%}
            {%- do bounds.update({'from': start, 'until': end, 'slices': total if incremental else 0}) -%}
        {%- endif -%}
    {%- endif -%}

    {%- if incremental and stale and bounds['slices'] -%}
        {{ log(
            this.identifier ~ ': rebuilding ' ~ stale | join(', ') ~ ' over ' ~ bounds['from'].strftime('%Y-%m-%d')
            ~ ' .. ' ~ bounds['until'].strftime('%Y-%m-%d') ~ ' in ' ~ bounds['slices'] ~ ' slices of '
            ~ step.days ~ ' days', info=True
        ) }}
        {%- set columns = rollup_column_names() | join(', ') -%}
        {%- for i in range(bounds['slices']) -%}
            {%- set lo = bounds['from'] + step * i -%}
            {%- set hi = [lo + step, bounds['until']] | min -%}
            {%- set window = (
                utc_timestamp(lo.strftime('%Y-%m-%d %H:%M:%S+00:00')),
                utc_timestamp(hi.strftime('%Y-%m-%d %H:%M:%S+00:00')),
            ) -%}
            {%- set began = modules.datetime.datetime.now() -%}
            {%- if source_grain is none -%}
                {%- set rows_sql = rollup_from_events(grain, retention_days, metrics=stale, window=window) -%}
            {%- else -%}
                {%- set rows_sql = rollup_from_rollups('fct_metrics_' ~ source_grain, grain, metrics=stale, window=window) -%}
            {%- endif -%}
            {%- set inserted = run_query(
                'insert into ' ~ this ~ ' (' ~ columns ~ ') select ' ~ columns ~ ' from (' ~ rows_sql ~ ') as rebuilt_rows'
            ) -%}
            {{ log(
                this.identifier ~ ': slice ' ~ (i + 1) ~ '/' ~ bounds['slices'] ~ ' [' ~ lo.strftime('%Y-%m-%d')
                ~ ', ' ~ hi.strftime('%Y-%m-%d') ~ '): '
                ~ ((inserted.rows[0][0] | string) ~ ' rows, ' if inserted.rows | length else '')
                ~ '%.2f' | format((modules.datetime.datetime.now() - began).total_seconds()) ~ ' s', info=True
            ) }}
        {%- endfor -%}
    {%- endif -%}

    {%- set forget = removed + rebuilt -%}
    {%- if not incremental -%}{%- set forget = built.keys() | list -%}{%- endif -%}
    {%- if forget -%}
        {%- do run_query(
            'delete from ' ~ definitions ~ ' where granularity = ' ~ dbt.string_literal(grain)
            ~ ' and metric in (' ~ _quoted(forget) ~ ')'
        ) -%}
    {%- endif -%}
    {%- if rebuilt -%}
        {%- set values = [] -%}
        {%- for name in rebuilt -%}
            {%- do values.append(
                '(' ~ dbt.string_literal(name) ~ ', ' ~ dbt.string_literal(grain) ~ ', '
                ~ dbt.string_literal(wanted[name]) ~ ', '
                ~ (dbt.string_literal(metric_definition(name)) if wanted[name] == metric_fingerprint(name) else 'null') ~ ', '
                ~ (utc_timestamp(bounds['from'].strftime('%Y-%m-%d %H:%M:%S+00:00')) if bounds['from'] else 'null') ~ ', '
                ~ (utc_timestamp(bounds['until'].strftime('%Y-%m-%d %H:%M:%S+00:00')) if bounds['until'] else 'null') ~ ', '
                ~ bounds['slices'] ~ ', ' ~ run_timestamp() ~ ')'
            ) -%}
        {%- endfor -%}
        {%- do run_query(
            'insert into ' ~ definitions ~ ' (metric, granularity, fingerprint, definition, history_from,'
            ~ ' history_until, slices, built_at) values ' ~ values | join(', ')
        ) -%}
    {%- endif -%}
    {{ return('') }}
{% endmacro %}

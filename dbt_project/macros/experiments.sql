{#-
    The experiments of `var('experiments')`, as the models need them; shared helpers of the
    experiment and funnel models (durations, escaped literals, `where` conditions).

    analytics_core/funnels.py is where a definition is checked (the query API and `analytics`
    refuse a project whose definitions break a rule). dbt reads the same YAML on its own, so the
    parts that become SQL are checked again here: keys and variant names must be plain names
    (they are written into the SQL), durations are parsed to seconds the same way, and every other
    value is written as an escaped string literal (sql_string).
-#}

{% macro experiment_definitions() %}
    {%- set plain = '^[a-z][a-z0-9_]{0,62}$' -%}
    {%- set out = [] -%}
    {%- set raw = var('experiments', {}) or {} -%}
    {%- for key in raw | sort -%}
        {%- set e = raw[key] -%}
        {%- if not modules.re.match(plain, key) -%}
            {{ exceptions.raise_compiler_error("experiments." ~ key ~ ": keys are lowercase letters, digits and _") }}
        {%- endif -%}
        {%- for variant in e['variants'] -%}
            {%- if not modules.re.match(plain, variant) -%}
                {{ exceptions.raise_compiler_error("experiments." ~ key ~ ".variants: " ~ variant ~ " is not a plain name") }}
            {%- endif -%}
        {%- endfor -%}
        {%- set metrics = [] -%}
        {%- for name in e['metrics'] | sort -%}
            {%- set m = e['metrics'][name] -%}
            {%- if not modules.re.match(plain, name) -%}
                {{ exceptions.raise_compiler_error("experiments." ~ key ~ ".metrics: " ~ name ~ " is not a plain name") }}
            {%- endif -%}
            {%- if m['kind'] not in ('conversion', 'continuous') or m.get('value') not in (none, 'revenue') -%}
                {{ exceptions.raise_compiler_error("experiments." ~ key ~ ".metrics." ~ name ~ ": kind must be conversion or continuous, value revenue or none") }}
            {%- endif -%}
            {%- do metrics.append({
                'name': name,
                'kind': m['kind'],
                'event_type': m['event_type'],
                'where': m.get('where') or {},
                'value': m.get('value'),
                'within': duration_seconds(m['within'], 'experiments.' ~ key ~ '.metrics.' ~ name ~ '.within'),
                'cuped': m.get('cuped', false),
                'higher_is_better': m.get('higher_is_better', true),
            }) -%}
            {%- if (m['event_type'] | string) == 'purchase' -%}{%- do metrics[-1].update({'purchases': purchase_types()}) -%}{%- endif -%}
        {%- endfor -%}
        {%- do out.append({
            'key': key,
            'variants': e['variants'],
            'control': e['control'],
            'start': e['start'] | string,
            'end': (e['end'] | string) if e.get('end') else none,
            'primary': e['primary'],
            'sequential': e.get('sequential', false),
            'alpha': e.get('alpha', 0.05),
            'metrics': metrics,
        }) -%}
    {%- endfor -%}
    {{ return(out) }}
{% endmacro %}

{#- Every (experiment, metric) of experiment_definitions(), flat: the metric's fields plus `experiment`. -#}
{% macro experiment_metrics(experiments) %}
    {%- set out = [] -%}
    {%- for e in experiments -%}
        {%- for m in e.metrics -%}{%- do out.append(dict(m, experiment=e.key, variants=e.variants, control=e.control)) -%}{%- endfor -%}
    {%- endfor -%}
    {{ return(out) }}
{% endmacro %}

{#- Seconds of `90s`, `30m`, `24h`, `7d` or an integer (analytics_core/funnels.py's parse_duration). -#}
{% macro duration_seconds(value, where) %}
    {%- if value is number -%}{{ return(value | int) }}{%- endif -%}
    {%- set match = modules.re.match('^\\s*(\\d+)\\s*([smhd])\\s*$', value | string) -%}
    {%- if not match -%}
        {{ exceptions.raise_compiler_error(where ~ ": " ~ value ~ " is not a duration such as 30m, 24h or 7d") }}
    {%- endif -%}
    {%- set units = {'s': 1, 'm': 60, 'h': 3600, 'd': 86400} -%}
    {{ return((match.group(1) | int) * units[match.group(2)]) }}
{% endmacro %}

{#- A string literal of `value`, escaped for the warehouse. -#}
{% macro sql_string(value) -%}
    {{ return(adapter.dispatch('sql_string', 'analytics')(value)) }}
{%- endmacro %}

{% macro default__sql_string(value) -%}
    {{ funnel_bigquery_literal(value) }}
{%- endmacro %}

{% macro duckdb__sql_string(value) -%}
    {{ funnel_duckdb_literal(value) }}
{%- endmacro %}

{#- Comma-separated string literals of `values`. -#}
{% macro sql_strings(values) -%}
    {%- set listed = [] -%}
    {%- for v in values -%}{%- do listed.append(sql_string(v)) -%}{%- endfor -%}
    {{ listed | join(', ') }}
{%- endmacro %}

{#- A timestamp literal of an ISO 8601 time from the YAML (UTC when it has no offset). -#}
{% macro iso_timestamp(value) -%}
    {%- set parsed = modules.datetime.datetime.fromisoformat((value | string).replace('Z', '+00:00')) -%}
    {%- if parsed.tzinfo is none -%}{%- set parsed = parsed.replace(tzinfo=modules.pytz.utc) -%}{%- endif -%}
    {{ return(utc_timestamp(parsed.astimezone(modules.pytz.utc).strftime('%Y-%m-%d %H:%M:%S.%f+00:00'))) }}
{%- endmacro %}

{#- SQL that is true when the staged event's fields have the values of a `where` mapping. -#}
{% macro where_matches(where, relation='') -%}
    {%- set prefix = (relation ~ '.') if relation else '' -%}
    {%- set parts = [] -%}
    {%- for field in where | sort -%}
        {%- set values = where[field] if where[field] is iterable and where[field] is not string else [where[field]] -%}
        {%- if field.startswith('properties.') -%}
            {%- set key = field[11:] -%}
            {%- if not modules.re.match('^[A-Za-z_][A-Za-z0-9_]{0,62}$', key) -%}
                {{ exceptions.raise_compiler_error(field ~ " is not a filterable field") }}
            {%- endif -%}
            {%- do parts.append(json_string(prefix ~ 'properties', key) ~ ' in (' ~ sql_strings(values) ~ ')') -%}
        {%- elif field in ('page', 'country', 'device', 'library', 'currency', 'experiment_variant') -%}
            {%- do parts.append(prefix ~ field ~ ' in (' ~ sql_strings(values) ~ ')') -%}
        {%- else -%}
            {{ exceptions.raise_compiler_error(field ~ " is not a filterable field") }}
        {%- endif -%}
    {%- endfor -%}
    {{ parts | join(' and ') if parts else 'true' }}
{%- endmacro %}

{#- The string value of a top-level key of a JSON object held as text (null when missing). -#}
{% macro json_string(column, key) -%}
    {{ return(adapter.dispatch('json_string', 'analytics')(column, key)) }}
{%- endmacro %}

{% macro default__json_string(column, key) -%}
    json_value({{ column }}, '$.{{ key }}')
{%- endmacro %}

{% macro duckdb__json_string(column, key) -%}
    json_extract_string({{ column }}, '$.{{ key }}')
{%- endmacro %}

{#-
    The fields of a significance row (analytics_core/stats/experiments.py's Row) in its order, with
    their SQL types: those of DuckDB's experiment_rows() (analytics_core/stats/duckdb_udf.py's
    ROW_STRUCTURE), and the same on BigQuery, where fct_experiment_significance reads them out of
    experiment_analyze's JSON rows. tests/integration/test_dbt_bigquery.py holds the two together.
-#}
{% macro experiment_row_columns() %}
    {%- set types = experiment_sql_types() -%}
    {%- set text, count, number, flag = types.text, types.count, types.number, types.flag -%}
    {{ return([
        ('metric', text), ('kind', text), ('variant', text), ('control', text),
        ('control_users', count), ('variant_users', count), ('control_mean', number), ('variant_mean', number),
        ('absolute_lift', number), ('absolute_ci_low', number), ('absolute_ci_high', number),
        ('absolute_p_value', number), ('relative_lift', number), ('relative_ci_low', number),
        ('relative_ci_high', number), ('relative_p_value', number), ('chance_to_win', number),
        ('risk_control', number), ('risk_variant', number), ('srm_p_value', number),
        ('verdict', text), ('cannot_compute', text), ('cuped', flag), ('sequential', flag), ('alpha', number),
    ]) }}
{% endmacro %}

{#-
    BigQuery: a FLOAT64 as a JSON number that parses back to the same double. 17 significant digits
    always do (`%g` drops trailing zeros); CAST AS STRING and TO_JSON_STRING promise no such thing.
-#}
{% macro bigquery_json_float(expression) -%}
    format('%.17g', {{ expression }})
{%- endmacro %}

{#- BigQuery: an integer-valued FLOAT64 or INT64 as a JSON integer. -#}
{% macro bigquery_json_integer(expression) -%}
    cast(cast({{ expression }} as int64) as string)
{%- endmacro %}

{#- The SQL types of the significance table's columns: text, count (integers), number (doubles), flag. -#}
{% macro experiment_sql_types() %}
    {%- if target.type == 'bigquery' -%}
        {{ return({'text': 'string', 'count': 'int64', 'number': 'float64', 'flag': 'bool'}) }}
    {%- endif -%}
    {{ return({'text': 'varchar', 'count': 'bigint', 'number': 'double', 'flag': 'boolean'}) }}
{% endmacro %}

{#-
    DuckDB: json_group_object(key, value) with its members in key order. The built-in is a macro
    over string_agg that takes no ORDER BY, so its order is the rows' (unspecified); a sum over the
    variants (the SRM statistic, the split's total) must add them in one order on both warehouses.
-#}
{% macro duckdb_json_group_object_sorted(key, value) -%}
    cast('{' || string_agg(to_json(cast({{ key }} as varchar)) || ':' || to_json({{ value }}), ',' order by {{ key }}) || '}' as json)
{%- endmacro %}

{#-
    The incremental experiment tables (fct_experiment_exposures, fct_experiment_user_metrics).
    Each row carries the hash of the parts of its experiment's definition it was built by
    (experiment_definition_hash); an experiment whose hash differs, or that has no rows yet, is
    rebuilt whole, and one no longer defined is deleted. Otherwise a run reads the events staged
    since the table's last build (`_staged_at` after its latest `_built_at`).
-#}

{#- The hash of what `table` ('exposures' or 'user_metrics') of experiment `e` (an experiment_definitions() entry) depends on. -#}
{% macro experiment_definition_hash(e, table) %}
    {%- set parts = {'start': e.start, 'end': e.end, 'variants': e.variants} -%}
    {%- if table == 'user_metrics' -%}{%- do parts.update({'metrics': e.metrics}) -%}{%- endif -%}
    {{ return(local_md5(tojson(parts, sort_keys=true))) }}
{% endmacro %}

{#- Columns an incremental experiment table gained since it was first built, with their types. -#}
{% macro experiment_added_columns(table) %}
    {%- set added = {'definition_hash': dbt.type_string()} -%}
    {%- if table == 'exposures' -%}{%- do added.update({'variants': string_list_type()}) -%}{%- endif -%}
    {{ return(added) }}
{% endmacro %}

{#-
    Where an incremental build of `table` starts: `built_at`, the table's latest `_built_at` as a
    timestamp literal, read before the pre-hook deletes anything (none: nothing built yet), and
    `rebuild`, the keys of `experiments` to build whole (every key on a first build; else the ones
    without rows or whose rows carry another definition hash; all of them when the table predates
    the hash column, and exposures all of them with `rebuild_from`). `kept` are the others,
    maintained from the events staged since `built_at`.
-#}
{% macro experiment_table_state(experiments, table) %}
    {%- set keys = experiments | map(attribute='key') | list -%}
    {%- set state = {'built_at': none, 'rebuild': keys, 'kept': []} -%}
    {%- if not (execute and is_incremental()) -%}{{ return(state) }}{%- endif -%}
    {%- set columns = adapter.get_columns_in_relation(this) | map(attribute='name') | map('lower') | list -%}
    {%- if 'definition_hash' not in columns -%}{{ return(state) }}{%- endif -%}
    {%- set query -%}
        select
            experiment_key,
            min(definition_hash) as low,
            max(definition_hash) as high,
            {{ epoch_microseconds('max(_built_at)') }} as built_us
        from {{ this }}
        group by experiment_key
    {%- endset -%}
    {%- set result = run_query(query) -%}
    {%- set built = [] -%}
    {%- set hashes = {} -%}
    {%- for row in result.rows -%}
        {%- if row[3] is not none -%}{%- do built.append(row[3] | int) -%}{%- endif -%}
        {%- do hashes.update({row[0]: (row[1], row[2])}) -%}
    {%- endfor -%}
    {#- No row: an empty table, or nothing could be read (the BigQuery compile check's stub client). -#}
    {%- if not built -%}{{ return(state) }}{%- endif -%}
    {%- set epoch = modules.datetime.datetime(1970, 1, 1, tzinfo=modules.pytz.utc) -%}
    {%- set at = epoch + modules.datetime.timedelta(microseconds=(built | max)) -%}
    {%- set rebuild = [] -%}
    {%- set kept = [] -%}
    {%- for e in experiments -%}
        {%- set hash = experiment_definition_hash(e, table) -%}
        {#- A replay (`rebuild_from`) may have re-staged any tagged event: exposures are counted again. -#}
        {%- if hashes.get(e.key) == (hash, hash) and not (table == 'exposures' and rebuild_point()) -%}{%- do kept.append(e.key) -%}{%- else -%}{%- do rebuild.append(e.key) -%}{%- endif -%}
    {%- endfor -%}
    {{ return({
        'built_at': utc_timestamp(at.strftime('%Y-%m-%d %H:%M:%S.%f+00:00')),
        'rebuild': rebuild,
        'kept': kept,
    }) }}
{% endmacro %}

{#- SQL that is true for rows of the experiments `keys` (false when there are none). -#}
{% macro experiment_in(keys, column='experiment_key') -%}
    {{ (column ~ ' in (' ~ sql_strings(keys) ~ ')') if keys else 'false' }}
{%- endmacro %}

{#-
    The pre-hook of the incremental experiment tables: first the columns a table built before they
    existed lacks, then delete the rows of experiments rebuilt whole or no longer defined. In
    fct_experiment_user_metrics also the rows of users whose exposure changed (another first
    exposure or variant, now excluded, or gone), and with `rebuild_from` those whose span (the
    CUPED one before exposure included) reaches it: all are counted again from their events.
-#}
{% macro delete_experiment_rows(table) %}
    {%- if not (execute and is_incremental()) -%}{{ return('') }}{%- endif -%}
    {%- set experiments = experiment_definitions() -%}
    {%- if table == 'user_metrics' -%}
        {%- set experiments = experiments | selectattr('metrics') | list -%}
    {%- endif -%}
    {%- set columns = adapter.get_columns_in_relation(this) | map(attribute='name') | map('lower') | list -%}
    {%- for name, type in experiment_added_columns(table).items() if name not in columns -%}
        {{ log(this.identifier ~ ': column ' ~ name ~ ' added (every experiment is rebuilt)', info=True) }}
        {%- do run_query('alter table ' ~ this ~ ' add column ' ~ name ~ ' ' ~ type) -%}
    {%- endfor -%}
    {%- set state = experiment_table_state(experiments, table) -%}
    {%- set keys = experiments | map(attribute='key') | list -%}
    {%- set parts = [
        experiment_in(state.rebuild, 'this_row.experiment_key'),
        ('this_row.experiment_key not in (' ~ sql_strings(keys) ~ ')') if keys else 'true',
    ] -%}
    {%- if table == 'user_metrics' -%}
        {%- do parts.append(
            'not exists (select 1 from ' ~ ref('fct_experiment_exposures') ~ ' as exposures'
            ~ ' where exposures.tenant_id = this_row.tenant_id'
            ~ ' and exposures.experiment_key = this_row.experiment_key'
            ~ ' and exposures.user_key = this_row.user_key'
            ~ ' and not exposures.excluded'
            ~ ' and exposures.first_exposed_at = this_row.first_exposed_at'
            ~ ' and exposures.variant = this_row.variant)'
        ) -%}
        {%- if rebuild_point() -%}
            {%- for m in experiment_metrics(experiments) -%}
                {%- do parts.append(
                    "(this_row.experiment_key = '" ~ m.experiment ~ "' and this_row.metric = '" ~ m.name ~ "'"
                    ~ ' and this_row.first_exposed_at >= ' ~ shift_timestamp(rebuild_point(), -m.within, 'second') ~ ')'
                ) -%}
            {%- endfor -%}
        {%- endif -%}
    {%- endif -%}
    delete from {{ this }} as this_row where {{ parts | join('\n    or ') }}
{% endmacro %}

{#- Epoch microseconds of a timestamp. -#}
{% macro epoch_microseconds(expression) -%}
    {{ return(adapter.dispatch('epoch_microseconds', 'analytics')(expression)) }}
{%- endmacro %}

{% macro default__epoch_microseconds(expression) -%}
    unix_micros({{ expression }})
{%- endmacro %}

{% macro duckdb__epoch_microseconds(expression) -%}
    epoch_us({{ expression }})
{%- endmacro %}

{#- The type of a list of strings (the variants a user was seen in). -#}
{% macro string_list_type() -%}
    {{ return(adapter.dispatch('string_list_type', 'analytics')()) }}
{%- endmacro %}

{% macro default__string_list_type() %}{{ return('array<string>') }}{% endmacro %}

{% macro duckdb__string_list_type() %}{{ return('varchar[]') }}{% endmacro %}

{#- A join of each row with each element of its list `expression`, the element named `name` (unqualified). -#}
{% macro unnest_join(expression, name) -%}
    {{ return(adapter.dispatch('unnest_join', 'analytics')(expression, name)) }}
{%- endmacro %}

{% macro default__unnest_join(expression, name) -%}
    cross join unnest({{ expression }}) as {{ name }}
{%- endmacro %}

{% macro duckdb__unnest_join(expression, name) -%}
    cross join unnest({{ expression }}) as unnested_{{ name }}({{ name }})
{%- endmacro %}

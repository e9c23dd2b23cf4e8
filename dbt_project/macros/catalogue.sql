{#- Readers of the metric catalogue (var metric_catalogue in dbt_project.yml). -#}

{#- Dimensions stored in the rollups, in catalogue order. -#}
{% macro rollup_dimensions() -%}
    {%- set dims = [] -%}
    {%- for name, dim in var('metric_catalogue')['dimensions'].items() if dim.get('rollup') -%}
        {%- do dims.append(name) -%}
    {%- endfor -%}
    {{ return(dims) }}
{%- endmacro %}

{#- (name, metric) pairs of the metrics of the given kinds. -#}
{% macro catalogue_metrics(kinds) -%}
    {%- set found = [] -%}
    {%- for name, metric in var('metric_catalogue')['metrics'].items() if metric['kind'] in kinds -%}
        {%- do found.append((name, metric)) -%}
    {%- endfor -%}
    {{ return(found) }}
{%- endmacro %}

{#- SQL condition an event meets to count towards a metric (humans_only unless said otherwise, as the API reads it). -#}
{% macro metric_condition(metric) -%}
    {%- set parts = [] -%}
    {%- if metric.get('humans_only', true) -%}{%- do parts.append('not is_bot') -%}{%- endif -%}
    {%- if metric.get('event_types') -%}
        {%- set quoted = [] -%}
        {%- for event_type in metric['event_types'] -%}{%- do quoted.append(dbt.string_literal(event_type)) -%}{%- endfor -%}
        {%- do parts.append('event_type in (' ~ quoted | join(', ') ~ ')') -%}
    {%- endif -%}
    {{ return(parts | join(' and ') if parts else 'true') }}
{%- endmacro %}

{#- What an event adds to an additive metric: 1 for counts, the column for sums. -#}
{% macro metric_value(metric) -%}
    {%- set amount = '1' if metric['kind'] == 'count' else 'coalesce(' ~ metric['column'] ~ ', 0)' -%}
    {{ return('case when ' ~ metric_condition(metric) ~ ' then ' ~ amount ~ ' else 0 end') }}
{%- endmacro %}

{#- '' for the total, else the dimension names joined by commas. -#}
{% macro dimension_set_name(dims) -%}{{ return(dims | join(',')) }}{%- endmacro %}

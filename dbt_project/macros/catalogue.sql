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

{#- The purchase mapping's event types as the SQL macros read them (macros/funnels.sql, event_type_in):
    {'default': [...], 'tenants': {tenant: [...]}}, a tenant without its own event_types getting the
    default's. The same as analytics_core's Catalogue.purchases.sql_types(). -#}
{% macro purchase_types() -%}
    {%- set mapping = var('metric_catalogue').get('purchases') or {} -%}
    {#- Without event_types, PurchaseMapping's default (tests/unit/test_metric_definitions.py compares). -#}
    {%- set default = (mapping.get('event_types') or ['purchase', 'Order Completed']) | list -%}
    {%- set tenants = {} -%}
    {%- for tenant, rule in (mapping.get('tenants') or {}).items() -%}
        {%- do tenants.update({tenant: ((rule or {}).get('event_types') or default) | list}) -%}
    {%- endfor -%}
    {{ return({'default': default, 'tenants': tenants}) }}
{%- endmacro %}

{#- SQL condition an event meets to count towards a metric (humans_only unless said otherwise, as the API
    reads it); `purchase` among its event types means the tenant's purchase event types. -#}
{% macro metric_condition(metric) -%}
    {%- set parts = [] -%}
    {%- if metric.get('humans_only', true) -%}{%- do parts.append('not is_bot') -%}{%- endif -%}
    {%- if metric.get('event_types') -%}
        {%- do parts.append(event_type_in(metric['event_types'] | list, sql_string, purchase_types())) -%}
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

{#- Generic test: no two rows share the values of `columns` (a composite key). -#}
{% test unique_combination(model, columns) %}

select {{ columns | join(', ') }}, count(*) as copies
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1

{% endtest %}

-- Incremental rather than a view: deduplicating the whole raw table on every minute's build
-- would rescan all history. New rows are the Kafka records past the last staged offset of their
-- partition (the loader commits each partition's records in offset order, so nothing is skipped).
{{ config(
    materialized='incremental',
    incremental_strategy=staging_strategy(),
    unique_key=['tenant_id', 'event_id'],
    pre_hook="{{ delete_from_rebuild_point('event_at') }}",
) }}

with

raw_events as (

    select *
    from {{ source('tracking', 'raw_events') }}

),

{% if is_incremental() %}
    staged_offsets as (

        select
            _kafka_partition,
            max(_kafka_offset) as staged_offset
        from {{ this }}
        group by _kafka_partition

    ),
{% endif %}

new_events as (

    select raw_events.*
    from raw_events
    {% if is_incremental() %}
        left join staged_offsets on raw_events._kafka_partition = staged_offsets._kafka_partition
        where
            staged_offsets.staged_offset is null
            or raw_events._kafka_offset > staged_offsets.staged_offset
        {% if rebuild_point() %}or raw_events.timestamp >= {{ rebuild_point() }}{% endif %}
    {% endif %}

),

-- A resend of the same event (SDK retry past the collector's dedupe window) keeps its first copy.
ranked as (

    select
        new_events.*,
        row_number() over (
            partition by new_events.tenant_id, new_events.event_id
            order by new_events.received_at, new_events._kafka_partition, new_events._kafka_offset
        ) as copy_number
    from new_events

),

first_copies as (

    select *
    from ranked
    where copy_number = 1

),

{% if is_incremental() %}
-- Copies of the same event carry the same client time, so earlier copies are within a day of it.
    already_staged as (

        select
            tenant_id,
            event_id
        from {{ this }}
        where event_at >= (select {{ shift_timestamp('min(timestamp)', -1, 'day') }} from first_copies)

    ),
{% endif %}

final as (

    select
        first_copies.event_id,
        first_copies.tenant_id,
        first_copies.message_type,
        first_copies.event_type,
        first_copies.user_id,
        first_copies.anonymous_id,
        coalesce(first_copies.user_id, first_copies.anonymous_id) as user_key,
        first_copies.timestamp as event_at,
        first_copies.original_timestamp,
        first_copies.sent_at,
        first_copies.received_at,
        first_copies.properties,
        first_copies.page,
        coalesce(first_copies.country, 'unknown') as country,
        coalesce(first_copies.device, 'unknown') as device,
        first_copies.revenue,
        first_copies.currency,
        first_copies.experiment_key,
        first_copies.experiment_variant,
        first_copies.library,
        first_copies.is_bot,
        first_copies._kafka_partition,
        first_copies._kafka_offset,
        {{ run_timestamp() }} as _staged_at
    from first_copies
    {% if is_incremental() %}
        left join already_staged
            on
                first_copies.tenant_id = already_staged.tenant_id
                and first_copies.event_id = already_staged.event_id
        where already_staged.event_id is null
    {% endif %}

)

select *
from final

"""A warehouse of generated events for the query-engine tests: canonical rows straight into raw_events.

Events are generated in DuckDB SQL (deterministic: every random choice is a hash of the row number
and a salt), so a block of tens of thousands of events takes milliseconds. Some events are resent
(a second Kafka record with the same event id, received later), some come from bots, some lack a
user id, country, device or page, and purchases carry revenue.
"""

from __future__ import annotations

from datetime import datetime

import duckdb

from analytics_core.events import to_micros

# Columns of a block: {start_us}, {end_us}, {n}, {tenant}, {salt}, {partition}, {first_offset}.
_EVENTS_SQL = """
WITH draws AS (
    SELECT
        i,
        {start_us} + (({end_us} - {start_us}) // {n}) * i + (hash(i, '{salt}', 'jitter') % 20000000)::BIGINT AS ts_us,
        (hash(i, '{salt}', 'kind') % 100)::BIGINT AS kind,
        (hash(i, '{salt}', 'user') % 900)::BIGINT AS user_no,
        (hash(i, '{salt}', 'country') % 12)::BIGINT AS country_no,
        (hash(i, '{salt}', 'device') % 100)::BIGINT AS device_no,
        (hash(i, '{salt}', 'page') % 6)::BIGINT AS page_no,
        (hash(i, '{salt}', 'exp') % 10)::BIGINT AS exp_no,
        (hash(i, '{salt}', 'rev') % 20000)::BIGINT AS cents
    FROM range({n}) AS t (i)
),

shaped AS (
    SELECT
        *,
        CASE
            WHEN kind < 50 THEN 'page_view'
            WHEN kind < 70 THEN 'product_viewed'
            WHEN kind < 85 THEN 'add_to_cart'
            WHEN kind < 93 THEN 'checkout_started'
            ELSE 'purchase'
        END AS event_type,
        CASE WHEN device_no < 3 THEN 'bot' WHEN device_no < 55 THEN 'desktop'
            WHEN device_no < 90 THEN 'mobile' WHEN device_no < 97 THEN 'tablet' END AS device,
        ['US', 'DE', 'FR', 'GB', 'IN', 'BR', 'JP', 'NL', 'CA', 'ES', NULL, 'US'][country_no + 1] AS country
    FROM draws
)

SELECT
    '{salt}-' || i AS event_id,
    '{tenant}' AS tenant_id,
    CASE WHEN event_type = 'page_view' THEN 'page' ELSE 'track' END AS message_type,
    event_type,
    CASE WHEN user_no % 4 = 0 THEN NULL ELSE 'usr-' || user_no END AS user_id,
    'anon-' || user_no AS anonymous_id,
    make_timestamp(ts_us)::TIMESTAMPTZ AS "timestamp",
    make_timestamp(ts_us)::TIMESTAMPTZ AS original_timestamp,
    make_timestamp(ts_us)::TIMESTAMPTZ AS sent_at,
    make_timestamp(ts_us + 1000000)::TIMESTAMPTZ AS received_at,
    '{{}}' AS properties,
    ['/', '/pricing', '/docs', '/cart', '/blog', NULL][page_no + 1] AS page,
    country,
    device,
    CASE WHEN event_type = 'purchase' THEN 5 + cents / 100 END AS revenue,
    CASE WHEN event_type = 'purchase' THEN 'USD' END AS currency,
    CASE WHEN exp_no < 6 THEN 'checkout-v2' END AS experiment_key,
    CASE WHEN exp_no < 3 THEN 'control' WHEN exp_no < 6 THEN 'treatment' END AS experiment_variant,
    '10.0.0.' || user_no % 250 AS ip,
    'test-agent' AS user_agent,
    'analytics.js 5.2.1' AS library,
    coalesce(device = 'bot', false) AS is_bot,
    {partition} AS _kafka_partition,
    {first_offset} + i AS _kafka_offset
FROM shaped
"""


def events_sql(
    tenant: str, start: datetime, end: datetime, n: int, salt: str, partition: int = 0, first_offset: int = 0
) -> str:
    """SELECT of n canonical raw-event rows spread over [start, end) (timestamps jittered by up to 20 s)."""
    if not (salt.isidentifier() and tenant.replace("_", "").isalnum()):
        raise ValueError("salt and tenant must be plain identifiers: they are pasted into test SQL")
    return _EVENTS_SQL.format(
        start_us=to_micros(start),
        end_us=to_micros(end) - 20_000_000,
        n=n,
        tenant=tenant,
        salt=salt,
        partition=partition,
        first_offset=first_offset,
    )


def insert_block(
    con: duckdb.DuckDBPyConnection,
    table: str,
    tenant: str,
    start: datetime,
    end: datetime,
    n: int,
    salt: str,
    partition: int = 0,
    first_offset: int = 0,
) -> int:
    """Insert a block of events and resends of 1 % of them (received a minute later); next free offset."""
    con.execute(f"INSERT INTO {table} {events_sql(tenant, start, end, n, salt, partition, first_offset)}")
    resent = n // 100
    con.execute(
        f"INSERT INTO {table} SELECT * REPLACE (received_at + INTERVAL 1 MINUTE AS received_at,"
        f" _kafka_offset + {n} AS _kafka_offset) FROM {table}"
        f" WHERE event_id LIKE '{salt}-%' AND _kafka_partition = {partition}"
        f" AND _kafka_offset >= {first_offset} AND _kafka_offset < {first_offset + resent}"
    )
    return first_offset + n + resent

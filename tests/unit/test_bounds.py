"""analytics_core/bounds.py: the rules one value at a time, the vectorised batch check against a plain-Python
verdict, and the loader's and the realtime consumer's decoders dropping exactly the rows out of bounds."""

from __future__ import annotations

import base64
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from confluent_kafka import Message
from pydantic import ValidationError

from analytics_core import bounds as bounds_module
from analytics_core.bounds import EXACT_REVENUE_LIMIT, Bounds
from analytics_core.columnar import SCHEMA
from analytics_core.decoding import BatchDecoder
from analytics_core.serde import EventSerializer
from analytics_core.settings import Settings
from bench.events import iter_events
from realtime.decoding import CountingDecoder
from tests.realtime_expected import plausible
from tests.unit.test_loader_committer import Store
from tests.unit.test_loader_sinks import DeadLetters

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY_US = 86_400_000_000
RECEIVED = 1_767_571_200_000_000  # 2026-01-05T00:00:00Z


def micros(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(microseconds=1)


YEAR_1 = micros(datetime(1, 1, 1, tzinfo=UTC))
YEAR_9999 = micros(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))
LOW, HIGH = micros(datetime(1900, 1, 1, tzinfo=UTC)), micros(datetime(2200, 1, 1, tzinfo=UTC))


def event(i: int, **changes: Any) -> dict[str, Any]:
    base = {
        "event_id": f"e{i}",
        "tenant_id": f"t{i % 3}",
        "message_type": "track",
        "event_type": "purchase",
        "user_id": "u",
        "timestamp": RECEIVED - 1_000_000,
        "received_at": RECEIVED,
        "properties": "{}",
        "revenue": 10.0,
        "is_bot": False,
    }
    return {**base, **changes}


CASES: list[dict[str, Any]] = [
    {},
    {"revenue": None},
    {"revenue": 1e308},
    {"revenue": 9.3e18},
    {"revenue": -9.3e18},
    {"revenue": float("nan")},
    {"revenue": float("inf")},
    {"revenue": float("-inf")},
    {"revenue": 1e9},
    {"revenue": -1e9},
    {"revenue": 1_000_000_000.0001},
    {"timestamp": YEAR_1},  # year 0001, no sentAt
    {"timestamp": RECEIVED - (YEAR_9999 - YEAR_1), "original_timestamp": YEAR_1, "sent_at": YEAR_9999},  # -7972
    {"timestamp": RECEIVED - 1, "original_timestamp": YEAR_1, "sent_at": YEAR_1 + 1},  # a clock in year 1
    {"original_timestamp": LOW - 1},
    {"original_timestamp": LOW},
    {"sent_at": HIGH},
    {"sent_at": HIGH - 1},
    {"timestamp": RECEIVED - 366 * DAY_US},
    {"timestamp": RECEIVED - 366 * DAY_US - 1},
    {"timestamp": RECEIVED + DAY_US},
    {"timestamp": RECEIVED + DAY_US + 1},
    {"received_at": 0, "timestamp": 0},  # the epoch: inside the window
    {"received_at": LOW - 1, "timestamp": LOW - 1},
    {"received_at": HIGH, "timestamp": HIGH},
    {"timestamp": -(2**63) + 1},
    {"timestamp": 2**63 - 1},
]


def table_of(events: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(events, schema=SCHEMA)


def test_defaults_are_the_settings_defaults_and_settings_refuse_an_inexact_revenue_bound() -> None:
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert Bounds.from_settings(defaults) == Bounds()
    assert (defaults.bounds_max_abs_revenue, defaults.bounds_max_event_age_days, defaults.bounds_max_future_skew_s) == (
        bounds_module.DEFAULT_MAX_ABS_REVENUE,
        bounds_module.DEFAULT_MAX_EVENT_AGE_DAYS,
        bounds_module.DEFAULT_MAX_FUTURE_SKEW_S,
    )
    assert EXACT_REVENUE_LIMIT * 1_000_000 == 2**53
    with pytest.raises(ValidationError):
        Settings(_env_file=None, bounds_max_abs_revenue=1e10)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="max_abs_revenue"):
        Bounds(max_abs_revenue=math.inf)
    custom = Settings(  # type: ignore[call-arg]
        _env_file=None, bounds_max_abs_revenue=5.0, bounds_max_event_age_days=2, bounds_max_future_skew_s=60
    )
    assert Bounds.from_settings(custom) == Bounds(5.0, 2 * DAY_US, 60_000_000)


def test_single_value_rules_name_the_rule() -> None:
    b = Bounds()
    assert b.revenue_rule(1e9) is None and b.revenue_rule(-1e9) is None
    assert b.revenue_rule(1e308) == "must be between -1000000000 and 1000000000 (bounds_max_abs_revenue)"
    assert b.revenue_rule(float("nan")) == b.revenue_rule(float("-inf")) == "must be a finite number"
    assert Bounds.client_time_rule(LOW) is None and Bounds.client_time_rule(HIGH - 1) is None
    assert Bounds.client_time_rule(YEAR_1) == "must be between 1900-01-01 and 2200-01-01 UTC"
    assert b.event_time_rule(RECEIVED + DAY_US, RECEIVED) is None
    assert b.event_time_rule(RECEIVED + DAY_US + 1, RECEIVED) == "more than 24 h after receivedAt"
    assert b.event_time_rule(YEAR_1, RECEIVED) == "more than 366 days before receivedAt (bounds_max_event_age_days)"
    wide = Bounds(max_age_us=36_500 * DAY_US)
    assert wide.event_time_rule(LOW - 1, LOW + DAY_US) == "must be between 1900-01-01 and 2200-01-01 UTC"


def test_batch_check_agrees_with_the_plain_rules_row_by_row() -> None:
    events = [event(i, **c) for i, c in enumerate(CASES)]
    want = np.array([not plausible(e) for e in events])
    assert want.sum() > 15 and (~want).sum() > 8  # both kinds well represented
    table = table_of(events)
    got = Bounds().out_of_bounds(table)
    assert got.tolist() == want.tolist()
    details = Bounds().details(table, np.flatnonzero(got))
    assert details[:3] == [
        "revenue: must be between -1000000000 and 1000000000 (bounds_max_abs_revenue)",
        "revenue: must be between -1000000000 and 1000000000 (bounds_max_abs_revenue)",
        "revenue: must be between -1000000000 and 1000000000 (bounds_max_abs_revenue)",
    ]
    by_case = dict(zip(np.flatnonzero(got).tolist(), details, strict=True))
    assert by_case[5] == "revenue: must be a finite number"
    assert by_case[11] == by_case[12] == "timestamp: more than 366 days before receivedAt (bounds_max_event_age_days)"
    assert by_case[13] == "original_timestamp: must be between 1900-01-01 and 2200-01-01 UTC"
    assert by_case[16] == "sent_at: must be between 1900-01-01 and 2200-01-01 UTC"
    assert by_case[21] == "timestamp: more than 24 h after receivedAt"
    assert by_case[23] == "received_at: must be between 1900-01-01 and 2200-01-01 UTC"
    # Chunked columns and an empty table.
    chunked = pa.concat_tables([table.slice(0, 7), table.slice(7)])
    assert Bounds().out_of_bounds(chunked).tolist() == want.tolist()
    assert Bounds().out_of_bounds(SCHEMA.empty_table()).tolist() == []


def _records(events: list[dict[str, Any]]) -> list[Message]:
    serialize = EventSerializer(1)
    return [Message(topic="t", partition=0, offset=o, value=serialize(e), key=b"k") for o, e in enumerate(events)]


def test_loader_dead_letters_and_realtime_skips_exactly_the_rows_out_of_bounds() -> None:
    good = list(iter_events(50))
    bad = [
        {**good[3], "event_id": "rev", "revenue": 1e308},
        {**good[4], "event_id": "nan", "revenue": float("nan")},
        {**good[5], "event_id": "old", "timestamp": YEAR_1},
        {**good[6], "event_id": "skewed", "timestamp": good[6]["received_at"] - (YEAR_9999 - YEAR_1)},
    ]
    events = good[:10] + bad[:2] + good[10:30] + bad[2:] + good[30:]
    records = _records(events)
    dlq = DeadLetters()
    loader = BatchDecoder(Store(), dlq, "dlq")  # type: ignore[arg-type]
    rows = loader.decode(records)  # type: ignore[arg-type]
    assert rows.column("event_id").to_pylist() == [e["event_id"] for e in good]
    assert rows.column("_kafka_offset").to_pylist() == [o for o, e in enumerate(events) if e in good]
    assert [(d.reason, d.source, d.tenant_id) for d in dlq.letters] == [
        ("out_of_range", "loader", e["tenant_id"]) for e in bad
    ]
    assert [d.detail for d in dlq.letters] == [
        "partition 0 offset 10: revenue: must be between -1000000000 and 1000000000 (bounds_max_abs_revenue)",
        "partition 0 offset 11: revenue: must be a finite number",
        "partition 0 offset 32: timestamp: more than 366 days before receivedAt (bounds_max_event_age_days)",
        "partition 0 offset 33: timestamp: more than 366 days before receivedAt (bounds_max_event_age_days)",
    ]
    assert base64.b64decode(dlq.letters[0].payload) == records[10].value()
    assert loader.dead_lettered == 4 and loader.by_reason == {"out_of_range": 4}

    realtime = CountingDecoder(Store())  # type: ignore[arg-type]
    parts = np.zeros(len(records), dtype=np.int64)
    offsets = np.arange(len(records), dtype=np.int64)
    usable = realtime.decode_usable(records, parts, offsets)
    assert usable.column("event_id").to_pylist() == rows.column("event_id").to_pylist()
    assert usable.column("_kafka_offset").to_pylist() == rows.column("_kafka_offset").to_pylist()
    assert realtime.dead_lettered == 4 and realtime.by_reason == {"out_of_range": 4}
    realtime.close()

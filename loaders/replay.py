"""Kappa-style replay: rewind the warehouse loader to a Kafka time and drop what it loaded from there on.

`reset_loader(settings, since)` finds, per partition of tracking.events, the first offset whose
Kafka timestamp is at or after `since`, then in ONE DuckLake transaction deletes the raw_events rows
at or past it and rewrites the loader's stored offsets (delete + insert, like the loader: a running
loader is fenced and re-seeks). Loading again and a dbt build with `rebuild_from =
plan.rebuild_from` then rebuild everything downstream. `python -m loaders.replay --since ISO`.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import duckdb
import typer
from confluent_kafka import ConsumerGroupState, KafkaException, TopicPartition

from analytics_core import warehouse
from analytics_core.clients import kafka_admin, kafka_consumer
from analytics_core.settings import Settings, get_settings
from analytics_core.times import parse_utc
from analytics_core.topics import Topics
from loaders.offsets import NO_OFFSET, RETRIES, _retryable, stored_offsets
from loaders.warehouse_loader import loader_group


@dataclass(frozen=True)
class PartitionReplay:
    partition: int
    kafka_offset: int  # first offset at or after `since` (the high watermark when there is none)
    previous_offset: int  # stored next offset before the reset; NO_OFFSET when nothing was loaded
    offset: int  # stored next offset now: min(kafka_offset, previous_offset); NO_OFFSET = untouched
    rows_deleted: int


@dataclass(frozen=True)
class ReplayPlan:
    topic: str
    since: datetime
    partitions: tuple[PartitionReplay, ...]
    earliest_deleted: datetime | None  # earliest event `timestamp` among the deleted rows
    group_offsets_committed: bool = False

    @property
    def rows_deleted(self) -> int:
        return sum(p.rows_deleted for p in self.partitions)

    @property
    def offsets(self) -> dict[int, int]:
        return {p.partition: p.offset for p in self.partitions if p.offset != NO_OFFSET}

    @property
    def rebuild_from(self) -> datetime:
        """Where dbt must rebuild from: `since`, or earlier when a deleted (late) event is older."""
        return min(self.since, self.earliest_deleted) if self.earliest_deleted else self.since


def first_offsets(settings: Settings, topic: str, since: datetime, timeout: float = 10.0) -> dict[int, int]:
    """Per partition, the first offset whose record timestamp is >= since (the high watermark if none)."""
    consumer = kafka_consumer(settings, loader_group(settings))  # offsets_for_times never joins the group
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics[topic]
        if meta.error is not None:
            raise KafkaException(meta.error)
        ms = int(since.timestamp() * 1000)
        wanted = [TopicPartition(topic, p, ms) for p in sorted(meta.partitions)]
        out = {}
        for tp in consumer.offsets_for_times(wanted, timeout=timeout):
            if tp.error is not None:
                raise KafkaException(tp.error)
            if tp.offset < 0:  # no record at or after `since`: nothing to replay in this partition
                tp.offset = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=timeout)[1]
            out[tp.partition] = int(tp.offset)
        return out
    finally:
        consumer.close()


def rewind_warehouse(
    con: duckdb.DuckDBPyConnection, alias: str, topic: str, since: datetime, kafka_offsets: dict[int, int]
) -> ReplayPlan:
    """Delete the rows at or past the offsets and rewrite the stored offsets, in one transaction (retried)."""
    delay = 0.05
    for attempt in range(RETRIES):
        try:
            con.execute("BEGIN")
            plan = _rewind(con, alias, topic, since, kafka_offsets)
            con.execute("COMMIT")
            return plan
        except duckdb.Error as exc:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            if not _retryable(exc) or attempt == RETRIES - 1:
                raise
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)
    raise AssertionError("unreachable")


def _rewind(
    con: duckdb.DuckDBPyConnection, alias: str, topic: str, since: datetime, kafka_offsets: dict[int, int]
) -> ReplayPlan:
    stored = stored_offsets(con, alias, topic)
    # Never move a partition forward: records the loader has not reached yet must still be loaded.
    offsets = {p: min(o, stored[p]) for p, o in sorted(kafka_offsets.items()) if p in stored}
    deleted: dict[int, int] = {}
    earliest_us: int | None = None
    if offsets:
        where = " OR ".join("(_kafka_partition = ? AND _kafka_offset >= ?)" for _ in offsets)
        params = [v for p, o in offsets.items() for v in (p, o)]
        counted = con.execute(
            f"SELECT _kafka_partition, count(*), epoch_us(min(timestamp)) FROM {alias}.{warehouse.RAW_EVENTS} "
            f"WHERE {where} GROUP BY 1",
            params,
        ).fetchall()
        deleted = {int(p): int(n) for p, n, _ in counted}
        earliest_us = min((int(us) for _, _, us in counted), default=None)
        con.execute(f"DELETE FROM {alias}.{warehouse.RAW_EVENTS} WHERE {where}", params)
        # The loader's own write: delete + insert, so a loader committing these partitions meanwhile is fenced.
        marks = ", ".join("?" for _ in offsets)
        con.execute(
            f"DELETE FROM {alias}.{warehouse.OFFSETS} WHERE topic = ? AND kafka_partition IN ({marks})",
            [topic, *offsets],
        )
        values = ", ".join("(?, ?, ?, now())" for _ in offsets)
        con.execute(
            f"INSERT INTO {alias}.{warehouse.OFFSETS} VALUES {values}",
            [v for p, o in offsets.items() for v in (topic, p, o)],
        )
    parts = tuple(
        PartitionReplay(p, o, stored.get(p, NO_OFFSET), offsets.get(p, NO_OFFSET), deleted.get(p, 0))
        for p, o in sorted(kafka_offsets.items())
    )
    earliest = datetime.fromtimestamp(earliest_us / 1e6, UTC) if earliest_us is not None else None
    return ReplayPlan(topic, since, parts, earliest)


def commit_group_offsets(settings: Settings, topic: str, offsets: dict[int, int], timeout: float = 10.0) -> bool:
    """Move the loader group's Kafka offsets (lag dashboards only) when no loader is in the group."""
    group = loader_group(settings)
    admin = kafka_admin(settings)
    try:
        state = admin.describe_consumer_groups([group], request_timeout=timeout)[group].result().state
    except KafkaException as exc:
        if "GROUP_ID_NOT_FOUND" not in str(exc):
            return False
        state = ConsumerGroupState.DEAD
    if state not in (ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD) or not offsets:
        return False
    consumer = kafka_consumer(settings, group)
    try:
        consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
        return True
    except KafkaException:  # a loader joined meanwhile: the warehouse offsets are the truth anyway
        return False
    finally:
        consumer.close()


def reset_loader(settings: Settings, since: datetime) -> ReplayPlan:
    """Rewind the loader to the first records at or after `since` (Kafka time), dropping their rows."""
    since = since.replace(tzinfo=UTC) if since.tzinfo is None else since.astimezone(UTC)
    topic = Topics.from_settings(settings).events
    kafka_offsets = first_offsets(settings, topic, since)
    con = warehouse.connect(settings)
    try:
        with warehouse.writer_lock(settings, "replay: rewind of the loader"):
            plan = rewind_warehouse(con, settings.warehouse_alias, topic, since, kafka_offsets)
    finally:
        con.close()
    committed = commit_group_offsets(settings, topic, plan.offsets)
    return ReplayPlan(plan.topic, plan.since, plan.partitions, plan.earliest_deleted, committed)


def main(
    since: Annotated[str, typer.Option(help="Replay Kafka records from this ISO-8601 time (no offset = UTC).")],
) -> None:
    """Rewind the warehouse loader to SINCE; then run the loader and dbt build with the printed rebuild_from."""
    plan = reset_loader(get_settings(), parse_utc(since))
    for p in plan.partitions:
        typer.echo(
            f"partition {p.partition}: first offset at/after since {p.kafka_offset}, stored {p.previous_offset} -> "
            f"{p.offset}, {p.rows_deleted} rows deleted"
        )
    typer.echo(f"{plan.rows_deleted} rows deleted; Kafka group offsets moved: {plan.group_offsets_committed}")
    rebuild = plan.rebuild_from.isoformat()
    typer.echo(
        "next: analytics loader --idle-exit 5, then "
        f"analytics dbt build --exclude-resource-type unit_test --vars '{{rebuild_from: \"{rebuild}\"}}'"
    )


if __name__ == "__main__":
    typer.run(main)

"""BigQuery as the loader's warehouse: each batch lands exactly once, keyed on its Kafka position.

The loader uses it when `settings.warehouse_target == "bigquery"`, through `BigQuerySink` (loaders/sinks.py):
`ensure_tables()` once at start instead of `warehouse.connect`, `stored_offsets(topic)` on assignment and
for `analytics loader --lag`, `write_batch(rows, topic, next_offsets)` on the writer thread; no compaction.
It never raises `Fenced` (`expected` is not needed): a zombie's batch is harmless, since rows already
present are skipped and offsets only move forward. Invalid JSON in `properties` would fail the whole
batch (PARSE_JSON), so the sink dead-letters such rows before they get here.

Per batch: the rows go to their own staging table by a Parquet load job (explicit schema), then one
transaction inserts the rows whose (_kafka_partition, _kafka_offset) raw_events lacks and moves
loader_offsets; staging is dropped, or expires if the process dies first. Retries repeat no row.
"""

from __future__ import annotations

import io
import logging
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from google.api_core.exceptions import GoogleAPICallError
from google.cloud import bigquery

from analytics_core.columnar import SCHEMA as EVENT_ARROW_SCHEMA
from analytics_core.events import BIGQUERY_TYPES, FIELDS, warehouse_ddl
from analytics_core.settings import Settings
from analytics_core.warehouse import KAFKA_COLUMNS, OFFSETS, RAW_EVENTS

log = logging.getLogger(__name__)
KAFKA_NAMES = tuple(name for name, _ in KAFKA_COLUMNS)
COLUMNS = (*(f.name for f in FIELDS), *KAFKA_NAMES)
JSON_COLUMNS = frozenset(f.name for f in FIELDS if f.type == "json")
# BigQuery load jobs accept JSON columns only from CSV, Avro or JSON files: Parquet carries them as
# STRING into staging and the INSERT turns them into JSON.
STAGING_SCHEMA = [
    bigquery.SchemaField(
        f.name, "STRING" if f.type == "json" else BIGQUERY_TYPES[f.type], mode="REQUIRED" if f.required else "NULLABLE"
    )
    for f in FIELDS
] + [bigquery.SchemaField(name, "INT64", mode="REQUIRED") for name in KAFKA_NAMES]
ARROW_SCHEMA = pa.schema([*EVENT_ARROW_SCHEMA, *(pa.field(name, pa.int64(), nullable=False) for name in KAFKA_NAMES)])
STAGING_TTL = timedelta(hours=6)
CONFLICT_RETRIES = 8
_PROJECT = re.compile(r"[a-z0-9][a-z0-9.:-]*[a-z0-9]")  # includes domain-scoped ids, e.g. example.com:proj
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _identifier(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not pattern.fullmatch(value):  # identifiers cannot be query parameters: checked, then written in SQL
        raise ValueError(f"invalid BigQuery {what}: {value!r}")
    return value


class BigQueryWriter:
    """raw_events and loader_offsets in `settings.bigquery_project`.`settings.bigquery_dataset`."""

    def __init__(self, settings: Settings, client: Any = None) -> None:
        if client is None:  # built here, not at import: needs credentials, and tests inject a fake
            client = bigquery.Client(project=settings.bigquery_project or None, location=settings.bigquery_location)
        self.client = client
        self.location = settings.bigquery_location
        self.project = _identifier(_PROJECT, settings.bigquery_project or client.project, "project")
        self.dataset = _identifier(_NAME, settings.bigquery_dataset, "dataset")

    def table_id(self, name: str) -> str:
        return f"{self.project}.{self.dataset}.{_identifier(_NAME, name, 'table')}"

    def quoted(self, name: str) -> str:
        return f"`{self.table_id(name)}`"

    def tables_sql(self) -> list[str]:
        """CREATE statements of raw_events (from the canonical model) and loader_offsets."""
        ddl = warehouse_ddl(self.quoted(RAW_EVENTS), "bigquery").rstrip().removesuffix(")").rstrip()
        kafka = "".join(f",\n    {name} INT64 NOT NULL" for name in KAFKA_NAMES)
        # Day partitions and clustering bound what dbt's incremental models and the dedupe scan.
        raw = f"{ddl}{kafka}\n)\nPARTITION BY DATE(timestamp)\nCLUSTER BY tenant_id, event_type"
        offsets = (
            f"CREATE TABLE IF NOT EXISTS {self.quoted(OFFSETS)} (\n    topic STRING NOT NULL,\n"
            "    kafka_partition INT64 NOT NULL,\n    next_offset INT64 NOT NULL,\n    updated_at TIMESTAMP NOT NULL\n)"
        )
        return [raw, offsets]

    def ensure_tables(self) -> None:
        dataset = bigquery.Dataset(f"{self.project}.{self.dataset}")
        dataset.location = self.location
        self.client.create_dataset(dataset, exists_ok=True)
        self.client.query(";\n".join(self.tables_sql()), location=self.location).result()

    def stored_offsets_sql(self) -> str:
        return (
            f"SELECT kafka_partition, MAX(next_offset) AS next_offset FROM {self.quoted(OFFSETS)}\n"
            "WHERE topic = @topic GROUP BY kafka_partition"
        )

    def stored_offsets(self, topic: str) -> dict[int, int]:
        """Next offset to load per partition, as committed in BigQuery."""
        config = bigquery.QueryJobConfig(query_parameters=[bigquery.ScalarQueryParameter("topic", "STRING", topic)])
        rows = self.client.query(self.stored_offsets_sql(), job_config=config, location=self.location).result()
        return {int(row["kafka_partition"]): int(row["next_offset"]) for row in rows}

    def transaction_sql(self, staging: str | None) -> str:
        """The script that inserts the staged rows not loaded yet and moves the offsets, atomically."""
        statements = ["BEGIN TRANSACTION"]
        if staging is not None:
            select = ", ".join(
                f"PARSE_JSON(s.{c}, wide_number_mode => 'round')" if c in JSON_COLUMNS else f"s.{c}" for c in COLUMNS
            )
            # A row counts as loaded when its Kafka position is; the same record always decodes to the
            # same timestamp, so the batch's time range limits the scan of raw_events to its days.
            statements.append(
                f"INSERT INTO {self.quoted(RAW_EVENTS)} ({', '.join(COLUMNS)})\n"
                f"SELECT {select}\nFROM {self.quoted(staging)} AS s\nWHERE NOT EXISTS (\n"
                f"    SELECT 1 FROM {self.quoted(RAW_EVENTS)} AS r\n"
                "    WHERE r._kafka_partition = s._kafka_partition AND r._kafka_offset = s._kafka_offset\n"
                "    AND r.timestamp BETWEEN @min_timestamp AND @max_timestamp\n)"
            )
        # Offsets only move forward, so a stale writer (a zombie past its session) cannot rewind them.
        statements.append(
            f"MERGE {self.quoted(OFFSETS)} AS t\nUSING (\n"
            "    SELECT @topic AS topic, kafka_partition, @next_offsets[OFFSET(i)] AS next_offset\n"
            "    FROM UNNEST(@partitions) AS kafka_partition WITH OFFSET AS i\n) AS s\n"
            "ON t.topic = s.topic AND t.kafka_partition = s.kafka_partition\n"
            "WHEN MATCHED AND s.next_offset > t.next_offset THEN\n"
            "    UPDATE SET next_offset = s.next_offset, updated_at = CURRENT_TIMESTAMP()\n"
            "WHEN NOT MATCHED THEN\n    INSERT (topic, kafka_partition, next_offset, updated_at)\n"
            "    VALUES (s.topic, s.kafka_partition, s.next_offset, CURRENT_TIMESTAMP())"
        )
        statements.append("COMMIT TRANSACTION")
        return ";\n".join(statements) + ";"

    def write_batch(self, table: pa.Table, topic: str, next_offsets: dict[int, int]) -> None:
        """Load the rows and move the offsets of the batch's partitions, exactly once on retry or crash."""
        if not next_offsets:
            return
        parts = sorted(next_offsets)
        params: list[Any] = [
            bigquery.ScalarQueryParameter("topic", "STRING", topic),
            bigquery.ArrayQueryParameter("partitions", "INT64", parts),
            bigquery.ArrayQueryParameter("next_offsets", "INT64", [next_offsets[p] for p in parts]),
        ]
        staging = f"loader_staging_{uuid.uuid4().hex}" if table.num_rows else None
        try:
            if staging is not None:
                rows = table.select(list(COLUMNS)).cast(ARROW_SCHEMA)
                self._stage(staging, rows)
                span = pc.min_max(rows["timestamp"])
                params += [bigquery.ScalarQueryParameter(f"{k}_timestamp", "TIMESTAMP", span[k].as_py()) for k in span]
            self._commit(self.transaction_sql(staging), params)
        finally:
            if staging is not None:
                self._drop(staging)

    def _stage(self, name: str, rows: pa.Table) -> None:
        table_id = self.table_id(name)
        staging = bigquery.Table(table_id, schema=STAGING_SCHEMA)
        staging.expires = datetime.now(UTC) + STAGING_TTL
        # Created before the load so the expiry is set even if the process dies right after it.
        self.client.create_table(staging)
        buf = io.BytesIO()
        pq.write_table(rows, buf)
        config = bigquery.LoadJobConfig(
            schema=STAGING_SCHEMA,
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            create_disposition=bigquery.CreateDisposition.CREATE_NEVER,
        )
        job = self.client.load_table_from_file(buf, table_id, rewind=True, job_config=config, location=self.location)
        job.result()

    def _commit(self, sql: str, params: list[Any]) -> None:
        config = bigquery.QueryJobConfig(query_parameters=params)
        delay = 0.5
        for attempt in range(CONFLICT_RETRIES):
            try:
                self.client.query(sql, job_config=config, location=self.location).result()
                return
            except GoogleAPICallError as exc:
                # Two transactions that both MERGE loader_offsets conflict and BigQuery aborts one;
                # redoing it is safe because rows already present are skipped.
                if "concurrent update" not in str(exc).lower() or attempt == CONFLICT_RETRIES - 1:
                    raise
                log.warning("transaction aborted by a concurrent one; retrying in %.1f s", delay)
                time.sleep(delay)
                delay = min(delay * 2, 8.0)

    def _drop(self, name: str) -> None:
        try:
            self.client.delete_table(self.table_id(name), not_found_ok=True)
        except GoogleAPICallError as exc:  # it expires anyway; the batch itself is committed or not
            log.warning("could not drop staging table %s: %s", name, exc)

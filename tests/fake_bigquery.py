"""Fake BigQuery clients for tests (BigQuery is unreachable from the test machines).

`FakeClient` records every call and answers what a test scripts. `FakeWarehouse` also keeps the
state BigQueryWriter's statements would leave behind: staged tables, raw_events keyed on the Kafka
position, loader_offsets, and a transaction that fails as a whole on invalid JSON, like PARSE_JSON.
"""

from __future__ import annotations

import io
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from google.api_core.exceptions import BadRequest
from google.cloud import bigquery
from google.cloud.bigquery.table import Row


@dataclass
class FakeJob:
    rows: list[Any] = field(default_factory=list)
    error: Exception | None = None

    def result(self) -> list[Any]:
        if self.error is not None:
            raise self.error
        return self.rows


@dataclass
class FakeClient:
    """Records every call; `query_results`/`load_error` script what the jobs answer."""

    project: str = "default-project"
    calls: list[tuple[str, Any]] = field(default_factory=list)
    query_results: list[FakeJob] = field(default_factory=list)
    load_error: Exception | None = None
    loaded: list[pa.Table] = field(default_factory=list)

    def create_dataset(self, dataset: bigquery.Dataset, exists_ok: bool = False) -> None:
        self.calls.append(("create_dataset", (dataset, exists_ok)))

    def create_table(self, table: bigquery.Table) -> None:
        self.calls.append(("create_table", table))

    def delete_table(self, table: str, not_found_ok: bool = False) -> None:
        self.calls.append(("delete_table", (table, not_found_ok)))

    def load_table_from_file(self, file_obj: io.BytesIO, destination: str, **kwargs: Any) -> FakeJob:
        if kwargs.get("rewind"):
            file_obj.seek(0)
        self.loaded.append(pq.read_table(file_obj))
        self.calls.append(("load", (destination, kwargs)))
        return FakeJob(error=self.load_error)

    def query(self, sql: str, job_config: bigquery.QueryJobConfig | None = None, **kwargs: Any) -> FakeJob:
        self.calls.append(("query", (sql, job_config, kwargs)))
        return self.query_results.pop(0) if self.query_results else FakeJob()

    def named(self, name: str) -> list[Any]:
        return [args for call, args in self.calls if call == name]


def params(job_config: bigquery.QueryJobConfig | None) -> dict[str, Any]:
    array = bigquery.ArrayQueryParameter
    parameters = job_config.query_parameters if job_config is not None else []
    return {p.name: p.values if isinstance(p, array) else p.value for p in parameters}


def _strict_json(text: str) -> None:
    def refuse(constant: str) -> None:
        raise ValueError(constant)

    json.loads(text, parse_constant=refuse)


@dataclass
class FakeWarehouse(FakeClient):
    """A FakeClient that also applies the writer's statements to tables held in memory."""

    raw: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)  # (partition, offset) -> row
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition) -> next offset
    staged: dict[str, pa.Table] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)  # main and writer threads both call

    def load_table_from_file(self, file_obj: io.BytesIO, destination: str, **kwargs: Any) -> FakeJob:
        job = super().load_table_from_file(file_obj, destination, **kwargs)
        with self.lock:
            self.staged[destination.rsplit(".", 1)[1]] = self.loaded[-1]
        return job

    def delete_table(self, table: str, not_found_ok: bool = False) -> None:
        super().delete_table(table, not_found_ok)
        with self.lock:
            self.staged.pop(table.rsplit(".", 1)[1], None)

    def query(self, sql: str, job_config: bigquery.QueryJobConfig | None = None, **kwargs: Any) -> FakeJob:
        super().query(sql, job_config, **kwargs)
        values = params(job_config)
        with self.lock:
            if sql.startswith("BEGIN TRANSACTION"):
                return self._transaction(sql, values)
            if "MAX(next_offset)" in sql:
                fields = {"kafka_partition": 0, "next_offset": 1}
                stored = [(p, o) for (topic, p), o in self.offsets.items() if topic == values["topic"]]
                return FakeJob(rows=[Row(pair, fields) for pair in sorted(stored)])
            return FakeJob()  # DDL

    def _transaction(self, sql: str, values: dict[str, Any]) -> FakeJob:
        found = re.search(r"FROM `[^`]+\.(loader_staging_\w+)` AS s", sql)
        rows = self.staged[found.group(1)].to_pylist() if found else []
        for row in rows:
            try:
                _strict_json(row["properties"])
            except ValueError as exc:  # PARSE_JSON: the whole transaction fails, nothing is applied
                return FakeJob(error=BadRequest(f"Invalid JSON: {exc}"))
        for row in rows:
            self.raw.setdefault((row["_kafka_partition"], row["_kafka_offset"]), row)
        for part, offset in zip(values["partitions"], values["next_offsets"], strict=True):
            key = (values["topic"], part)
            self.offsets[key] = max(offset, self.offsets.get(key, offset))  # MERGE: only forward
        return FakeJob()

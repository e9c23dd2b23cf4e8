"""The BigQuery writer's jobs and SQL, against a fake client (BigQuery is unreachable from the test machines)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
import sqlglot
from google.api_core.exceptions import BadRequest
from google.cloud import bigquery
from google.cloud.bigquery.table import Row
from sqlglot import exp

from analytics_core.events import BIGQUERY_TYPES, FIELDS
from analytics_core.settings import Settings
from loaders import bigquery_writer
from loaders.bigquery_writer import BigQueryWriter
from tests.fake_bigquery import FakeClient, FakeJob, params
from tests.unit.raw_rows import raw_rows

PROJECT, DATASET = "acme-analytics", "events_ds"


def settings(**overrides: Any) -> Settings:
    values = {"bigquery_project": PROJECT, "bigquery_dataset": DATASET, "bigquery_location": "EU", **overrides}
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture()
def client() -> FakeClient:
    return FakeClient()


@pytest.fixture()
def writer(client: FakeClient) -> BigQueryWriter:
    return BigQueryWriter(settings(), client=client)


EXPECTED_FIELDS = [
    (f.name, "STRING" if f.type == "json" else BIGQUERY_TYPES[f.type], "REQUIRED" if f.required else "NULLABLE")
    for f in FIELDS
] + [("_kafka_partition", "INT64", "REQUIRED"), ("_kafka_offset", "INT64", "REQUIRED")]


def test_batch_is_loaded_with_an_explicit_parquet_schema(writer: BigQueryWriter, client: FakeClient) -> None:
    writer.write_batch(raw_rows(20, 3, 100), "tracking.events", {3: 120})
    (destination, kwargs) = client.named("load")[0]
    config: bigquery.LoadJobConfig = kwargs["job_config"]
    assert [(f.name, f.field_type, f.mode) for f in config.schema] == EXPECTED_FIELDS
    assert config.source_format == bigquery.SourceFormat.PARQUET
    assert config.write_disposition == bigquery.WriteDisposition.WRITE_TRUNCATE
    assert not config.autodetect
    assert kwargs["location"] == "EU"
    assert destination.startswith(f"{PROJECT}.{DATASET}.loader_staging_")
    # The staging table exists with the same schema and an expiry before anything is loaded into it.
    staging: bigquery.Table = client.named("create_table")[0]
    assert staging.table_id == destination.rsplit(".", 1)[1]
    assert [(f.name, f.field_type, f.mode) for f in staging.schema] == EXPECTED_FIELDS
    assert staging.expires is not None
    parquet = client.loaded[0]
    assert parquet.column_names == [name for name, _, _ in EXPECTED_FIELDS]
    assert parquet.num_rows == 20
    assert parquet["_kafka_offset"].to_pylist() == list(range(100, 120))
    assert client.named("delete_table") == [(destination, True)]  # dropped once committed


def statements(sql: str) -> list[exp.Expression]:
    parsed = sqlglot.parse(sql, read="bigquery")
    assert all(s is not None for s in parsed)
    return [s for s in parsed if s is not None]


def test_transaction_inserts_unseen_positions_and_merges_every_partition(
    writer: BigQueryWriter, client: FakeClient
) -> None:
    batch = pa.concat_tables([raw_rows(5, 0, 40), raw_rows(5, 2, 7)])
    writer.write_batch(batch, "tracking.events", {0: 45, 2: 12})
    ((sql, job_config, kwargs),) = client.named("query")
    assert sql.startswith("BEGIN TRANSACTION;") and sql.rstrip().endswith("COMMIT TRANSACTION;")
    begin, insert, merge, commit = statements(sql)
    assert [type(s) for s in (begin, insert, merge, commit)] == [exp.Transaction, exp.Insert, exp.Merge, exp.Commit]
    assert insert.this.this.name == "raw_events"
    assert [c.name for c in insert.this.expressions] == [name for name, _, _ in EXPECTED_FIELDS]
    (not_exists,) = [n for n in insert.find_all(exp.Not) if isinstance(n.this, exp.Exists)]
    subquery = not_exists.this.this
    assert subquery.find(exp.Table).name == "raw_events"
    conditions = {c.sql("bigquery") for c in subquery.args["where"].find_all(exp.EQ)}
    assert conditions == {"r._kafka_partition = s._kafka_partition", "r._kafka_offset = s._kafka_offset"}
    assert "PARSE_JSON(s.properties" in insert.sql("bigquery")
    assert merge.this.name == "loader_offsets"
    assert kwargs["location"] == "EU"
    values = params(job_config)
    assert values["topic"] == "tracking.events"
    assert dict(zip(values["partitions"], values["next_offsets"], strict=True)) == {0: 45, 2: 12}
    assert values["min_timestamp"] <= values["max_timestamp"]


def test_identifiers_are_quoted_and_values_are_parameters(writer: BigQueryWriter, client: FakeClient) -> None:
    writer.write_batch(raw_rows(3, 5, 987_654), "tracking.events", {5: 987_657})
    writer.stored_offsets("tracking.events")
    for sql, job_config, _ in client.named("query"):
        assert "tracking.events" not in sql and "987" not in sql
        parsed = statements(sql)
        assert {p.name for s in parsed for p in s.find_all(exp.Parameter)} == set(params(job_config))
        assert {lit.this for s in parsed for lit in s.find_all(exp.Literal) if lit.is_string} <= {"round"}
        for table in (t for s in parsed for t in s.find_all(exp.Table) if t.name):
            assert [p.quoted for p in table.parts] == [True, True, True], table.sql("bigquery")
            assert (table.catalog, table.db) == (PROJECT, DATASET)
            assert f"`{PROJECT}.{DATASET}.{table.name}`" in sql


def test_offsets_only_move_forward(writer: BigQueryWriter) -> None:
    merge = statements(writer.transaction_sql("loader_staging_x"))[2]
    matched = [w for w in merge.args["whens"].expressions if w.args.get("matched")]
    assert [w.args["condition"].sql("bigquery") for w in matched] == ["s.next_offset > t.next_offset"]


def test_failed_load_moves_no_offset(writer: BigQueryWriter, client: FakeClient) -> None:
    client.load_error = BadRequest("Error while reading data")
    with pytest.raises(BadRequest):
        writer.write_batch(raw_rows(4, 1, 0), "tracking.events", {1: 4})
    assert client.named("query") == []
    (destination, _), *_ = client.named("load")
    assert client.named("delete_table") == [(destination, True)]


def test_concurrent_abort_is_retried_and_other_errors_are_not(
    writer: BigQueryWriter, client: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bigquery_writer.time, "sleep", lambda _: None)
    aborted = BadRequest("Transaction is aborted due to concurrent update against table raw_events")
    client.query_results = [FakeJob(error=aborted), FakeJob()]
    writer.write_batch(raw_rows(2, 0, 0), "t", {0: 2})
    first, second = client.named("query")
    assert first[0] == second[0] and len(client.named("delete_table")) == 1
    client.query_results = [FakeJob(error=BadRequest("JSON parsing error in row starting at position 0"))]
    with pytest.raises(BadRequest, match="JSON"):
        writer.write_batch(raw_rows(2, 0, 2), "t", {0: 4})
    assert len(client.named("delete_table")) == 2


def test_empty_batch_only_moves_offsets(writer: BigQueryWriter, client: FakeClient) -> None:
    writer.write_batch(raw_rows(1, 0, 0).slice(0, 0), "t", {0: 9})  # everything was dead-lettered
    assert client.named("load") == [] and client.named("create_table") == []
    ((sql, job_config, _),) = client.named("query")
    assert [type(s) for s in statements(sql)] == [exp.Transaction, exp.Merge, exp.Commit]
    assert params(job_config)["next_offsets"] == [9]


def test_stored_offsets_parses_rows(writer: BigQueryWriter, client: FakeClient) -> None:
    fields = {"kafka_partition": 0, "next_offset": 1}
    client.query_results = [FakeJob(rows=[Row((0, 120), fields), Row((4, 7), fields)])]
    assert writer.stored_offsets("tracking.events") == {0: 120, 4: 7}
    ((sql, job_config, _),) = client.named("query")
    assert params(job_config) == {"topic": "tracking.events"}
    (select,) = statements(sql)
    assert select.find(exp.Table).name == "loader_offsets"


def test_ensure_tables_from_the_canonical_model(writer: BigQueryWriter, client: FakeClient) -> None:
    writer.ensure_tables()
    ((dataset, exists_ok),) = client.named("create_dataset")
    assert (dataset.dataset_id, dataset.location, exists_ok) == (DATASET, "EU", True)
    ((sql, _, _),) = client.named("query")
    raw, offsets = statements(sql)
    columns = [(c.name, c.args["kind"].sql("bigquery")) for c in raw.this.expressions]
    assert columns == [(f.name, BIGQUERY_TYPES[f.type]) for f in FIELDS] + [
        ("_kafka_partition", "INT64"),
        ("_kafka_offset", "INT64"),
    ]
    assert "PARTITION BY DATE(timestamp)\nCLUSTER BY tenant_id, event_type" in sql
    assert [c.name for c in offsets.this.expressions] == ["topic", "kafka_partition", "next_offset", "updated_at"]


def test_every_statement_parses_as_bigquery(writer: BigQueryWriter) -> None:
    built = [writer.stored_offsets_sql(), writer.transaction_sql("s"), writer.transaction_sql(None)]
    for sql in [*writer.tables_sql(), *built]:
        assert statements(sql), sql


def test_client_comes_from_settings_and_identifiers_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[dict[str, Any]] = []
    monkeypatch.setattr(bigquery, "Client", lambda **kw: made.append(kw) or FakeClient(project="adc-project"))
    assert BigQueryWriter(settings(bigquery_project="")).project == "adc-project"
    assert made == [{"project": None, "location": "EU"}]
    with pytest.raises(ValueError, match="dataset"):
        BigQueryWriter(settings(bigquery_dataset="x`; DROP SCHEMA y; --"), client=FakeClient())

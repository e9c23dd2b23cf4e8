"""The `analytics` command's surface: subcommands present, schema output derived from the model."""

from __future__ import annotations

import duckdb
from typer.testing import CliRunner

from analytics_cli.main import app
from analytics_core.events import FIELD_NAMES

runner = CliRunner()


def test_help_lists_the_subcommands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("stack", "generate", "schema", "settings"):
        assert command in result.output


def test_schema_duckdb_is_executable_ddl() -> None:
    result = runner.invoke(app, ["schema", "duckdb"])
    assert result.exit_code == 0
    con = duckdb.connect()
    con.execute(result.output)
    assert [r[0] for r in con.execute("describe raw_events").fetchall()] == list(FIELD_NAMES)


def test_schema_unknown_is_a_clear_error() -> None:
    result = runner.invoke(app, ["schema", "avro"])
    assert result.exit_code == 2
    assert "choose proto, duckdb or bigquery" in result.output


def test_settings_prints_every_variable() -> None:
    result = runner.invoke(app, ["settings"])
    assert result.exit_code == 0
    assert "ANALYTICS_KAFKA_BOOTSTRAP=" in result.output
    assert "ANALYTICS_REDIS_URL=" in result.output

"""`analytics` console command."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from analytics_cli.experiments import app as experiments_app
from api.cli import serve_api
from collector.cli import serve_collector
from generator.cli import generate
from loaders.cli import run_loader
from loaders.replay import main as replay
from realtime.cli import run_realtime
from schema_registry.cli import serve_registry
from stack.cli import app as stack_app
from tenants.cli import app as tenants_app

app = typer.Typer(
    help=(
        "Analytics pipeline: stack, tenants, collector, schema registry, warehouse loader, realtime counters,"
        " dbt, query API, traffic generator."
    ),
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(stack_app, name="stack", help="Start, stop and inspect the local Kafka and Redis.")
app.add_typer(tenants_app, name="tenants", help="Create tenants, list them, rotate their keys, change their settings.")
app.add_typer(experiments_app, name="experiments", help="A/B experiment statistics from per-variant sums.")
app.command("generate")(generate)
app.command("collector")(serve_collector)
app.command("registry")(serve_registry)
app.command("loader")(run_loader)
app.command("api")(serve_api)
app.command("replay")(replay)
app.command("realtime")(run_realtime)


@app.command(
    "dbt",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def dbt(ctx: typer.Context) -> None:
    """Run dbt on dbt_project/ against this warehouse: `analytics dbt build`, `analytics dbt test -s MODEL`."""
    from analytics_core.dbt import run_dbt
    from analytics_core.settings import get_settings

    if not ctx.args or ctx.args[0].startswith("-"):
        typer.echo("usage: analytics dbt COMMAND [dbt options]   e.g. analytics dbt build; see `dbt --help`")
        raise typer.Exit(0 if ctx.args else 2)
    raise typer.Exit(run_dbt(get_settings(), list(ctx.args)).returncode)


@app.command("schema")
def schema(
    what: Annotated[
        str, typer.Argument(help="proto: the Kafka schema; duckdb or bigquery: the raw events table DDL.")
    ] = "proto",
) -> None:
    """Print the schemas derived from the canonical event model."""
    from analytics_core.events import warehouse_ddl
    from analytics_core.serde import proto_schema_text

    dialects: dict[str, Literal["duckdb", "bigquery"]] = {"duckdb": "duckdb", "bigquery": "bigquery"}
    if what == "proto":
        typer.echo(proto_schema_text(), nl=False)
    elif what in dialects:
        typer.echo(warehouse_ddl("raw_events", dialects[what]) + ";")
    else:
        typer.secho(f"unknown schema '{what}': choose proto, duckdb or bigquery", fg="red", err=True)
        raise typer.Exit(2)


@app.command("settings")
def show_settings() -> None:
    """Print the effective settings (ANALYTICS_* environment and .env) as KEY=value lines."""
    from analytics_core.settings import get_settings

    for key, value in get_settings().model_dump().items():
        typer.echo(f"ANALYTICS_{key.upper()}={value if value is not None else ''}")

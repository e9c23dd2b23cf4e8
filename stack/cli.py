"""The `analytics stack` commands: up, down and status of the local Kafka and Redis."""

from __future__ import annotations

import time

import typer
from rich.console import Console
from rich.table import Table

from analytics_core.settings import get_settings
from stack import manager
from stack.checks import StackError

app = typer.Typer(
    help="Run the local Kafka (KRaft, single node) and Redis the pipeline needs. "
    "Data, logs and pids live in ANALYTICS_STATE_DIR (.state/); Kafka jars are cached in ANALYTICS_CACHE_DIR.",
    no_args_is_help=True,
)

HEALTH_STYLE = {"healthy": "green", "unhealthy": "red", "stopped": "yellow", "external": "cyan"}


def _fail(err: StackError) -> typer.Exit:
    console = Console(stderr=True)
    console.print(err.problem, style="bold red", markup=False, highlight=False)
    console.print(f"fix: {err.fix}", style="red", markup=False, highlight=False)
    return typer.Exit(code=2)


@app.command()
def up(
    timeout: float = typer.Option(manager.HEALTH_TIMEOUT_S, help="Seconds to wait for each service to be healthy."),
) -> None:
    """Start Kafka and Redis (unless already running), wait until both are healthy, create the topics.

    The first run downloads the Kafka jars with Maven (cached; later runs need no network).

    Running `up` while the stack is healthy starts nothing.

    With ANALYTICS_STACK_KAFKA=false or ANALYTICS_STACK_REDIS=false that service is only checked.

    Exits 2 and prints the problem and its fix when something is wrong.
    """
    began = time.monotonic()
    try:
        manager.up(get_settings(), timeout=timeout)
    except StackError as err:
        raise _fail(err) from None
    Console(stderr=True).print(f"stack up in {time.monotonic() - began:.1f} s", style="green")


@app.command()
def down() -> None:
    """Stop the Kafka and Redis that `up` started, by their recorded pids.

    SIGTERM first, SIGKILL after a grace period. Processes the stack did not start are never touched.

    Data and logs stay in the state folder.
    """
    try:
        manager.down(get_settings())
    except StackError as err:
        raise _fail(err) from None


@app.command()
def status() -> None:
    """Show each service's process, pid, port, health and data folder.

    healthy: answers a Kafka produce/consume round trip or a Redis PING (also when another checkout
    or process runs it: then without a pid, and `down` leaves it); unhealthy; stopped.

    external: not run by the stack (ANALYTICS_STACK_*=false); says whether it is reachable.
    """
    try:
        rows = manager.status(get_settings())
    except StackError as err:
        raise _fail(err) from None
    table = Table(title="analytics stack")
    for column in ("process", "pid", "port", "health", "data folder"):
        table.add_column(column)
    for row in rows:
        health = f"[{HEALTH_STYLE[row.health]}]{row.health}[/]" + (f" ({row.detail})" if row.detail else "")
        table.add_row(row.name, str(row.pid or "-"), str(row.port), health, str(row.data_dir or "-"))
    Console().print(table)

"""`analytics loader`: run the warehouse loader (analytics_cli mounts run_loader as `analytics loader`)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from analytics_core.consuming import run_command
from analytics_core.settings import get_settings
from loaders.committer import LoaderStats
from loaders.lag import loader_lag
from loaders.warehouse_loader import WarehouseLoader


def run_loader(
    idle_exit: Annotated[
        float | None, typer.Option(help="Exit after this many seconds without new events (default: run until SIGTERM).")
    ] = None,
    lag: Annotated[bool, typer.Option("--lag", help="Print per-partition stored offsets and lag, then exit.")] = False,
    max_events: Annotated[
        int | None, typer.Option(min=1, help="Stop after loading this many events (for tests and benchmarks).")
    ] = None,
) -> None:
    """Load tracking.events into the warehouse (DuckLake, or BigQuery): micro-batches, offsets in the same commit."""
    settings = get_settings()
    console = Console(stderr=True)
    if lag:
        for p in loader_lag(settings):
            console.print(f"partition {p.partition}: stored {p.stored_offset}, high {p.high_watermark}, lag {p.lag}")
        return
    run_command(WarehouseLoader(settings), _summary, idle_exit, max_events)


def _summary(stats: LoaderStats) -> str:
    reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(stats.dead_letter_reasons.items()))
    return (
        f"loaded {stats.loaded:,} events in {stats.batches} batches; {stats.dead_lettered} dead letters"
        f"{f' ({reasons})' if reasons else ''}, {stats.fenced} fenced batches, {stats.compactions} compactions; "
        f"{stats.lock_wait_s:.1f} s waiting for the warehouse writer lock, fetching paused {stats.paused} times"
    )


def main() -> None:
    """`python -m loaders.cli`: the same command without the analytics wrapper (the crash test uses it)."""
    typer.run(run_loader)


if __name__ == "__main__":
    main()

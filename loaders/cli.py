"""`analytics loader`: run the warehouse loader (analytics_cli mounts run_loader as `analytics loader`)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console

from analytics_core.settings import get_settings
from loaders.lag import loader_lag
from loaders.warehouse_loader import WarehouseLoader


def run_loader(
    idle_exit: Annotated[
        float | None, typer.Option(help="Exit after this many seconds without new events (default: run until SIGTERM).")
    ] = None,
    lag: Annotated[bool, typer.Option("--lag", help="Print per-partition stored offsets and lag, then exit.")] = False,
) -> None:
    """Load tracking.events into the warehouse (DuckLake, or BigQuery): micro-batches, offsets in the same commit."""
    settings = get_settings()
    console = Console(stderr=True)
    if lag:
        for p in loader_lag(settings):
            console.print(f"partition {p.partition}: stored {p.stored_offset}, high {p.high_watermark}, lag {p.lag}")
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    stats = WarehouseLoader(settings).run(idle_exit_s=idle_exit)
    reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(stats.dead_letter_reasons.items()))
    console.print(
        f"loaded {stats.loaded:,} events in {stats.batches} batches; {stats.dead_lettered} dead letters"
        f"{f' ({reasons})' if reasons else ''}, {stats.fenced} fenced batches, {stats.compactions} compactions"
    )


def main() -> None:
    """`python -m loaders.cli`: the same command without the analytics wrapper (the crash test uses it)."""
    typer.run(run_loader)


if __name__ == "__main__":
    main()

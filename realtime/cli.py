"""`analytics realtime`: run the realtime consumer (mounted on the analytics command as `realtime`)."""

from __future__ import annotations

from typing import Annotated

import typer

from analytics_core.consuming import run_command
from analytics_core.settings import get_settings
from realtime.apply import RealtimeStats
from realtime.consumer import RealtimeConsumer


def run_realtime(
    idle_exit: Annotated[
        float | None,
        typer.Option(help="Stop after this many seconds without new events (default: run until stopped)."),
    ] = None,
    batch_events: Annotated[
        int | None,
        typer.Option(min=1, help="Write to Redis at least every this many events (default: from the settings)."),
    ] = None,
    batch_seconds: Annotated[
        float | None,
        typer.Option(min=0.001, help="Write to Redis at least this often, in seconds (default: from the settings)."),
    ] = None,
    max_events: Annotated[
        int | None, typer.Option(min=1, help="Stop after handling this many events (for tests and benchmarks).")
    ] = None,
) -> None:
    """Keep live numbers in Redis: read tracking.events and update per-minute counters and unique-user counts.

    Each tenant's part of a batch goes to Redis in one transaction with the Kafka offsets it covers.

    So a crash or a restart never counts an event twice.

    If Redis loses its data, the numbers of the retention window are rebuilt from Kafka.

    Stop it with Ctrl-C or SIGTERM: it finishes the batch it holds first.
    """
    settings = get_settings()
    updates: dict[str, object] = {}
    if batch_events is not None:
        updates["realtime_batch_events"] = batch_events
    if batch_seconds is not None:
        updates["realtime_batch_seconds"] = batch_seconds
    if updates:
        settings = settings.model_copy(update=updates)
    run_command(RealtimeConsumer(settings), _summary, idle_exit, max_events)


def _summary(stats: RealtimeStats) -> str:
    return (
        f"applied {stats.applied:,} events in {stats.batches} batches; {stats.duplicates:,} duplicates, "
        f"{stats.too_old:,} too old, {stats.undecodable:,} undecodable, {stats.out_of_range:,} out of range, "
        f"{stats.replayed:,} already applied, {stats.write_errors:,} refused Redis writes, {stats.rebuilds} rebuilds"
    )


def main() -> None:
    """`python -m realtime.cli`: the same command without the analytics wrapper (the crash test uses it)."""
    typer.run(run_realtime)


if __name__ == "__main__":
    main()

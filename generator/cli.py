"""`analytics generate`: synthetic traffic with known ground truth, to Kafka, a collector, a file or nowhere."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from analytics_core.events import to_micros
from analytics_core.settings import get_settings
from generator.config import GeneratorConfig
from generator.http_sink import HttpSink
from generator.run import RunResult, run
from generator.sinks import FileSink, KafkaSink, NullSink, Sink

app = typer.Typer(help=__doc__, no_args_is_help=False)


def _write_keys(pairs: list[str]) -> dict[str, str]:
    keys = {}
    for pair in pairs:
        tenant, sep, key = pair.partition("=")
        if not sep or not tenant or not key:
            raise typer.BadParameter(f"{pair!r} is not TENANT=KEY, e.g. tenant_1=wk_live_abc", param_hint="--write-key")
        keys[tenant] = key
    return keys


def make_sink(target: str, config: GeneratorConfig, gzip_body: bool, concurrency: int) -> Sink:
    """The sink for a --to value: kafka, null, file:PATH or http(s)://HOST:PORT."""
    if target == "kafka":
        return KafkaSink(get_settings())
    if target == "null":
        return NullSink()
    if target.startswith("file:"):
        return FileSink(Path(target.removeprefix("file:")))
    if target.startswith(("http://", "https://")):
        keys = {t: config.write_key(t) for t in config.tenant_ids}
        return HttpSink(target, keys, client_clock=config.live, gzip_body=gzip_body, concurrency=concurrency)
    raise typer.BadParameter(f"{target!r}: use kafka, null, file:PATH or http://HOST:PORT", param_hint="--to")


def summary(result: RunResult, target: str) -> Table:
    counts = result.truth.to_dict()["counts"]["total"]
    table = Table(title=f"generated → {target}", show_header=True)
    table.add_column("what")
    table.add_column("count", justify="right")
    rows: list[tuple[str, int | str]] = [
        ("records sent", result.records),
        ("valid (first sends)", counts["valid"]),
        ("  of which bots", counts["bot"]),
        ("  of which late", counts["late"]),
        ("duplicates (resends)", counts["duplicate"]),
        ("invalid", counts["invalid"]),
    ]
    rows += [(f"  {kind}", n) for kind, n in counts["invalid_by_kind"].items() if n]
    rows += [(f"{result.seconds:.1f} s", f"{result.rate:,.0f} records/s")]
    rows += [(f"{target} {status}", n) for status, n in sorted(result.statuses.items())]
    for what, n in rows:
        table.add_row(what, f"{n:,}" if isinstance(n, int) else str(n))
    return table


def generate(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="TARGET",
            help="kafka | null | file:PATH (JSON lines) | http://HOST:PORT (Segment /v1/batch).",
        ),
    ] = "null",
    days: Annotated[int, typer.Option(help="Backfill: days of history.", min=1)] = 1,
    events_per_day: Annotated[
        int, typer.Option(help="Backfill: records a day (all kinds), on average.", min=1)
    ] = 100_000,
    start: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="Backfill: first day (UTC). Default: today minus --days."),
    ] = None,
    rate: Annotated[
        float | None, typer.Option(help="Live mode: records a second, timestamped now. Omit for backfill.")
    ] = None,
    duration: Annotated[float, typer.Option(help="Live: seconds to run.")] = 60.0,
    seed: Annotated[int, typer.Option(help="Random seed: same seed and options give identical events and truth.")] = 1,
    tenants: Annotated[int, typer.Option(help="Tenants tenant_1..tenant_N, sized 1 : 1/2 : 1/3 …", min=1)] = 3,
    write_key: Annotated[
        list[str] | None,
        typer.Option(
            "--write-key", metavar="TENANT=KEY", help="HTTP: TENANT=KEY (repeatable); default key = tenant id."
        ),
    ] = None,
    users: Annotated[int | None, typer.Option(help="Human users. Default: records a day / 5 (100..1M).", min=1)] = None,
    bots: Annotated[int, typer.Option(help="Crawler bots, spread over tenants.", min=0)] = 3,
    bot_share: Annotated[float, typer.Option(help="Share of records sent by bots.")] = 0.03,
    invalid_share: Annotated[float, typer.Option(help="Share of records that are invalid (for the DLQ).")] = 0.01,
    late_share: Annotated[float, typer.Option(help="Share of records delivered hours after they happened.")] = 0.02,
    duplicate_share: Annotated[
        float, typer.Option(help="Share of records that are exact resends (same event id).")
    ] = 0.01,
    experiment_lift: Annotated[
        float, typer.Option(help="True relative lift of checkout→purchase in the treatment arm.")
    ] = 0.10,
    truth: Annotated[
        Path | None, typer.Option(help="Ground-truth JSON. Default: <state_dir>/truth/<seed>.json.")
    ] = None,
    gzip: Annotated[bool, typer.Option("--gzip", help="HTTP: gzip request bodies.")] = False,
    concurrency: Annotated[int, typer.Option(help="HTTP: requests in flight.", min=1)] = 4,
    progress: Annotated[bool, typer.Option(help="Progress bar on stderr.")] = True,
) -> None:
    """Generate deterministic traffic (backfill history or live) and write its ground truth."""
    if start is not None and rate is not None:
        raise typer.BadParameter(
            "--start is for backfill; live mode stamps events with the current time", param_hint="--start"
        )
    first_day = start.date() if start else datetime.now(UTC).date() - timedelta(days=days)
    config = GeneratorConfig(
        seed=seed,
        tenants=tenants,
        users=users,
        bots=bots,
        bot_share=bot_share,
        invalid_share=invalid_share,
        late_share=late_share,
        duplicate_share=duplicate_share,
        experiment_lift=experiment_lift,
        start_us=to_micros(datetime.combine(first_day, datetime.min.time(), UTC)),
        days=days,
        events_per_day=events_per_day,
        rate=rate,
        duration=duration,
        write_keys=_write_keys(write_key or []),
    )
    try:
        config.check()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    result = run(config, make_sink(to, config, gzip, concurrency), progress=progress)
    path = truth or get_settings().state_dir / "truth" / f"{seed}.json"
    result.truth.write(path)
    console = Console()
    console.print(summary(result, to))
    if result.interrupted:
        console.print(
            "[yellow]interrupted: the truth covers what was generated until then (the last batch may be partly sent)[/]"
        )
    console.print(f"ground truth: {path}")


app.command()(generate)

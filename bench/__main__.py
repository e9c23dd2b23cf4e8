"""`python -m bench [--scale small|large] [--only NAME...]`: run the benchmarks and record the results."""

from __future__ import annotations

import argparse
import sys
from typing import cast

from rich.console import Console

from analytics_core.settings import get_settings
from bench import (
    bench_codec,
    bench_collector,
    bench_dashboards,
    bench_dbt,
    bench_freshness,
    bench_funnels,
    bench_hll,
    bench_kafka,
    bench_loader,
    bench_query,
    bench_realtime,
)
from bench.harness import Benchmark, Scale, results_table, run_benchmarks, write_results

# In run order: the raw Kafka figures come first because later benchmarks use them as baselines.
BENCHMARKS: list[tuple[str, Benchmark]] = [
    ("kafka", bench_kafka.run),
    ("loader", bench_loader.run),
    ("realtime", bench_realtime.run),
    ("dbt", bench_dbt.run),
    ("codec", bench_codec.run),
    ("collector", bench_collector.run),
    ("query", bench_query.run),
    ("funnels", bench_funnels.run),
    ("dashboards", bench_dashboards.run),
    ("freshness", bench_freshness.run),
    ("hll", bench_hll.run),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--scale", choices=("small", "large"), default="small")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        choices=[name for name, _ in BENCHMARKS],
        help="run only these benchmarks",
    )
    args = parser.parse_args(argv)
    selected = [(name, fn) for name, fn in BENCHMARKS if not args.only or name in args.only]
    # Piped output (make, CI logs) would otherwise be cut to 80 columns and truncate the names.
    console = Console(width=None if sys.stdout.isatty() else 140)
    settings = get_settings()
    console.print(f"bench: scale={args.scale}, kafka={settings.kafka_bootstrap}")
    run = run_benchmarks(selected, settings, cast(Scale, args.scale), console)
    path = write_results(run, settings)
    console.print(results_table(run.records))
    console.print(f"results: {path}")
    if run.failures:
        failed = ", ".join(f["benchmark"] for f in run.failures)
        console.print(f"[red]{len(run.failures)} benchmark(s) failed: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

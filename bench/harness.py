"""Benchmark records, the run loop, the results table and the JSON files under bench/results/."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

from analytics_core.settings import Settings

Scale = Literal["small", "large"]
Record = dict[str, Any]
Benchmark = Callable[[Settings, Scale], list[Record]]

RESULTS_DIR = Path(__file__).parent / "results"
RECORD_KEYS = ("name", "value", "unit", "baseline", "ratio", "target", "meets_target")
# ">= 0.5 x baseline" compares the ratio to the baseline; ">= 100000" compares the value itself.
_TARGET = re.compile(r"^\s*(>=|<=)\s*([0-9][0-9_,]*(?:\.[0-9]+)?)\s*(x\b)?")


def _parse_target(target: str) -> tuple[str, float, bool]:
    """(operator, bound, is_ratio) of a target string; ValueError if it is not one."""
    m = _TARGET.match(target)
    if not m:
        raise ValueError(f"target {target!r} must look like '>= 0.5 x baseline' or '<= 250'")
    return m.group(1), float(m.group(2).replace("_", "").replace(",", "")), m.group(3) is not None


def record(
    name: str,
    value: float,
    unit: str,
    baseline: Record | str | tuple[str, float] | None = None,
    target: str | None = None,
) -> Record:
    """A result record; baseline is an earlier record, (name, value), or a name the harness resolves."""
    if isinstance(baseline, dict):
        base: dict[str, Any] | None = {"name": baseline["name"], "value": baseline["value"]}
    elif isinstance(baseline, str):
        base = {"name": baseline, "value": None}
    elif baseline is not None:
        base = {"name": baseline[0], "value": baseline[1]}
    else:
        base = None
    if target is not None:
        _parse_target(target)  # fail in the benchmark that wrote it, not later in the table
    rec = {"name": name, "value": value, "unit": unit, "baseline": base, "target": target}
    return finalize(rec, {})


def finalize(rec: Record, known: dict[str, float]) -> Record:
    """Fill a by-name baseline from earlier results, then compute ratio and meets_target."""
    base = rec.get("baseline")
    if base is not None and base.get("value") is None and base["name"] in known:
        base = {"name": base["name"], "value": known[base["name"]]}
    ratio = None
    if base is not None and base["value"]:
        ratio = rec["value"] / base["value"]
    meets = None
    if rec.get("target"):
        op, bound, is_ratio = _parse_target(rec["target"])
        observed = ratio if is_ratio else rec["value"]
        if observed is not None:
            meets = observed >= bound if op == ">=" else observed <= bound
    out = {"name": rec["name"], "value": rec["value"], "unit": rec["unit"], "baseline": base}
    return {**out, "ratio": ratio, "target": rec.get("target"), "meets_target": meets}


@dataclass
class Run:
    """The outcome of one harness run."""

    scale: Scale
    started: datetime
    records: list[Record] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)


def run_benchmarks(
    benchmarks: Sequence[tuple[str, Benchmark]], settings: Settings, scale: Scale, console: Console
) -> Run:
    """Run each benchmark in order; one that raises is reported and the rest still run."""
    run = Run(scale=scale, started=datetime.now(UTC))
    for name, fn in benchmarks:
        console.rule(f"[bold]{name}")
        run.ran.append(name)
        known = {r["name"]: r["value"] for r in run.records}
        done: list[Record] = []
        try:
            for rec in fn(settings, scale):
                done.append(finalize(rec, known))
                known[rec["name"]] = rec["value"]
        except Exception as exc:  # any failure of one benchmark must not cost the others
            console.print(f"[red]benchmark {name} failed: {type(exc).__name__}: {exc}")
            console.print(traceback.format_exc(), style="dim", markup=False, highlight=False)
            run.failures.append({"benchmark": name, "error": f"{type(exc).__name__}: {exc}"})
            continue
        run.records.extend(done)
    return run


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def write_results(run: Run, settings: Settings, results_dir: Path | None = None) -> Path:
    """Write <UTC timestamp>.json and latest.json (in bench/results/ by default); return the first."""
    results_dir = results_dir or RESULTS_DIR
    doc = {
        "time": run.started.isoformat(timespec="seconds"),
        "scale": run.scale,
        "host": {"hostname": platform.node(), "cores": os.cpu_count(), "python": platform.python_version()},
        "git_commit": _git_commit(),
        "kafka_bootstrap": settings.kafka_bootstrap,
        "benchmarks": run.ran,
        "failures": run.failures,
        "records": [{k: r[k] for k in RECORD_KEYS} for r in run.records],
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=2) + "\n"
    path = results_dir / f"{run.started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(text)
    (results_dir / "latest.json").write_text(text)
    return path


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.3g}"


def results_table(records: Sequence[Record]) -> Table:
    table = Table(title="Benchmark results")
    for col in ("name", "value", "unit", "baseline", "ratio", "target", "meets"):
        table.add_column(col, justify="right" if col in ("value", "ratio") else "left")
    for r in records:
        base = r["baseline"]
        meets = {True: "[green]yes", False: "[red]NO", None: "-"}[r["meets_target"]]
        table.add_row(
            r["name"],
            _num(r["value"]),
            r["unit"],
            base["name"] if base else "-",
            f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-",
            r["target"] or "-",
            meets,
        )
    return table

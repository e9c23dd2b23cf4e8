"""The `analytics experiments` commands: the significance of an A/B experiment from its per-variant sums.

The document format is analytics_core/stats/document.py's, the statistics analytics_core/stats/estimates.py's
and the rows analytics_core/stats/experiments.py's (docs/EXPERIMENTS.md); this is only reading the document
and printing the rows.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from analytics_core.stats import experiments

app = typer.Typer(
    help="A/B experiment statistics from per-variant sums (docs/EXPERIMENTS.md).",
    no_args_is_help=True,
)

_VERDICTS = {
    "win": ("win", "green"),
    "loss": ("loss", "red"),
    "not_significant_yet": ("not significant yet", ""),
    "srm": ("SRM — do not trust", "bold yellow"),
}


@app.command()
def analyze(
    source: Annotated[str, typer.Argument(help="The JSON document's file, or - for standard input.")] = "-",
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as a JSON array instead of tables.")] = False,
) -> None:
    """Each variant against control: lifts with intervals and p-values, chance to win, SRM check, verdict.

    Exits 2 with one line naming the field and the rule when the document is malformed.
    """
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
        rows = experiments.analyze(text)
    except (OSError, ValueError) as err:
        Console(stderr=True).print(str(err), style="bold red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(experiments.rows_json(rows))
        return
    out = Console()
    for metric in dict.fromkeys(r.metric for r in rows):
        _print_metric(out, [r for r in rows if r.metric == metric])


def _print_metric(out: Console, rows: list[experiments.Row]) -> None:
    first = rows[0]
    flags = [f"alpha {first.alpha:g}", *(["sequential"] if first.sequential else [])]
    srm = _p(first.srm_p_value).removeprefix("p ")
    level = f"{1 - first.alpha:.0%}"
    table = Table(
        "variant\nusers",
        "mean\nvs control",
        f"absolute lift\n{level} CI\np",
        f"relative lift\n{level} CI\np",
        "chance\nto win",
        "verdict",
        title=f"{first.metric} ({first.kind}) vs {first.control} ({first.control_users:,} users): "
        f"SRM p {srm}, {', '.join(flags)}",
        title_justify="left",
    )
    for r in rows:
        label, style = _VERDICTS[r.verdict]
        table.add_row(
            f"{r.variant}{' (CUPED)' if r.cuped else ''}\n{r.variant_users:,}",
            f"{_num(r.variant_mean)}\nvs {_num(r.control_mean)}",
            f"{_num(r.absolute_lift, '+')}\n[{_num(r.absolute_ci_low, '+', 3)}, {_num(r.absolute_ci_high, '+', 3)}]"
            f"\n{_p(r.absolute_p_value)}",
            f"{_pct(r.relative_lift)}\n[{_pct(r.relative_ci_low)}, {_pct(r.relative_ci_high)}]"
            f"\n{_p(r.relative_p_value)}",
            "—" if r.chance_to_win is None else f"{r.chance_to_win:.1%}",
            f"[{style}]{label}[/]" if style else label,
        )
    out.print(table)
    for r in rows:
        if r.cannot_compute:
            out.print(f"{r.variant}: cannot compute: {r.cannot_compute}", markup=False, highlight=False)


def _num(x: float | None, sign: str = "", digits: int = 4) -> str:
    return "—" if x is None else f"{x:{sign}.{digits}g}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:+.2%}"


def _p(x: float | None) -> str:
    if x is None:
        return "—"
    if x == 0:
        return "p < 1e-300"  # underflowed
    return f"p = {x:.2g}" if x < 1e-4 else f"p = {x:.4f}"

"""Whether the rollups a plan reads were built by the catalogue's metric definitions, and what to do when not.

Each rollup model records, per stored metric, the fingerprint of the definition its whole history
was built by (dbt_project/macros/definitions.sql); fct_warehouse_watermarks republishes them per
tenant and grain as `metric=fingerprint,...`, read with the watermark. A metric whose recorded
fingerprint differs from the engine's catalogue (a metric just added, or whose definition changed,
before `analytics dbt build` rebuilt its history; or an API still serving an older catalogue than
dbt built with) is not answered from those rollups as if they were right:

- when the raw path may take the query (range within ANALYTICS_API_MAX_RAW_RANGE_DAYS), the whole
  query is answered exactly from the staged events, by the catalogue's definition;
- otherwise from the rollups, with a caveat in `provenance.incomplete` naming the metric, the
  grains, the range and the command that rebuilds it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from analytics_core.catalogue import Catalogue, Granularity
from analytics_core.settings import Settings
from api.engine.planner import Plan
from api.engine.validation import Query

FIX_COMMAND = "analytics dbt build"
Built = dict[Granularity, dict[str, str]]  # grain -> stored metric -> fingerprint its rollups were built by


def parse(text: str | None) -> dict[str, str]:
    """`metric=fingerprint,...` (fct_warehouse_watermarks.metric_definitions) as a dict; {} for none."""
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        name, _, value = item.partition("=")
        if name and value:
            out[name] = value
    return out


def stale_rollups(
    plan: Plan, query: Query, current: dict[str, str], built: Built | None
) -> dict[str, list[Granularity]]:
    """Base metrics of the query whose rollups, at a grain the plan reads before the watermark, hold another definition.

    `built` None: nothing is known (no watermark rows for the tenant: no rollups to read either).
    """
    if built is None or plan.raw_reason:
        return {}
    grains = sorted({p.grain for p in plan.pieces_in("complete", "stale") if p.grain != "raw"})
    stale: dict[str, list[Granularity]] = {}
    for metric in query.base_metrics:
        wrong = [g for g in grains if built.get(g, {}).get(metric) != current.get(metric)]
        if wrong:
            stale[metric] = wrong
    return stale


def _named(stale: dict[str, list[Granularity]], query: Query, catalogue: Catalogue) -> str:
    names = []
    for metric in stale:
        users = [
            m
            for m in query.metrics
            if catalogue.metrics[m].kind == "ratio"
            and metric in (catalogue.metrics[m].numerator, catalogue.metrics[m].denominator)
        ]
        names.append(f"{metric} (and {', '.join(users)}, which uses it)" if users else metric)
    return ", ".join(names)


def reconcile(
    plan: Plan,
    query: Query,
    catalogue: Catalogue,
    current: dict[str, str],
    built: Built | None,
    settings: Settings,
) -> list[str]:
    """Route a query whose rollups hold another definition to raw events, or return the caveats to add.

    Mutates `plan` (raw_reason, dimension_set) when the raw path takes the query.
    """
    stale = stale_rollups(plan, query, current, built)
    if not stale:
        return []
    names = ", ".join(stale)
    if query.span_s <= settings.api_max_raw_range_days * 86400:
        plan.raw_reason = (
            f"the rollups of {names} were built by another definition than the catalogue's, until"
            f" `{FIX_COMMAND}` rebuilds their history"
        )
        plan.dimension_set = None
        plan.pieces = []
        return []
    caveats = []
    for metric, grains in stale.items():
        pieces = [p for p in plan.pieces_in("complete", "stale") if p.grain in grains]
        start = datetime.fromtimestamp(min(p.start for p in pieces), UTC).isoformat()
        end = datetime.fromtimestamp(max(p.end for p in pieces), UTC).isoformat()
        recorded = {g: (built or {}).get(g, {}).get(metric) for g in grains}
        held = ", ".join(f"{g}: {fp or 'none'}" for g, fp in recorded.items())
        caveats.append(
            f"{_named({metric: grains}, query, catalogue)}: the {' and '.join(grains)} rollups were not built by the"
            f" catalogue's definition of {metric} (fingerprint {current.get(metric)}; the rollups hold {held}),"
            f" so its numbers from {start} to {end} are incomplete until `{FIX_COMMAND}` rebuilds its history;"
            f" ranges of at most {settings.api_max_raw_range_days} days are answered exactly from raw events meanwhile"
        )
    return caveats

"""An experiment's results for one tenant, read from the tables dbt builds (docs/EXPERIMENTS.md, Tables).

The significance rows are fct_experiment_significance's, computed by analytics_core/stats when the
hourly job built them; the users per variant and the exclusions are counted from
fct_experiment_exposures. Both are small (a row per variant and metric; a count per variant): read
from the lake whenever the answer cache has no current answer (api/routes/experiments.py).
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Any

from analytics_core.funnels import Experiment
from analytics_core.stats.experiments import Row

COLUMNS = tuple(f.name for f in fields(Row))


def definition(key: str, experiment: Experiment) -> dict[str, Any]:
    """The definition as the API shows it (GET /api/v1/experiments)."""
    return {
        "key": key,
        "title": experiment.title or key,
        "description": experiment.description,
        "variants": experiment.variants,
        "control": experiment.control,
        "start": experiment.start,
        "end": experiment.end,
        "sequential": experiment.sequential,
        "alpha": experiment.alpha,
        "metrics": [
            {
                "key": name,
                "title": metric.title or name,
                "kind": metric.kind,
                "event_type": metric.event_type,
                "value": metric.value,
                "within_s": metric.within,
                "cuped": metric.cuped,
                "higher_is_better": metric.higher_is_better,
                "primary": name == experiment.primary,
            }
            for name, metric in experiment.metrics.items()
        ],
    }


def results(read: Any, tenant_id: str, key: str, experiment: Experiment) -> dict[str, Any]:
    """The tenant's results of one experiment; `read(sql, params)` reads the lake ({lake} its alias)."""
    counts = read(
        "SELECT variant, excluded_reason, count(*) FROM {lake}.main.fct_experiment_exposures"
        " WHERE tenant_id = ? AND experiment_key = ? GROUP BY ALL",
        [tenant_id, key],
    )
    users = dict.fromkeys(experiment.variants, 0)
    excluded: dict[str, int] = {}
    for variant, reason, n in counts:
        if reason is None:
            users[variant] = int(n)
        else:
            excluded[reason] = excluded.get(reason, 0) + int(n)
    found = read(
        f"SELECT {', '.join(COLUMNS)}, _built_at FROM {{lake}}.main.fct_experiment_significance"
        " WHERE tenant_id = ? AND experiment_key = ? ORDER BY is_primary DESC, metric, variant",
        [tenant_id, key],
    )
    rows = [dict(zip(COLUMNS, r[:-1], strict=True)) for r in found]
    built: datetime | None = max((r[-1] for r in found), default=None)
    primary = [r for r in rows if r["metric"] == experiment.primary]
    return {
        "experiment": definition(key, experiment),
        "users": users,
        "excluded": excluded,
        "srm_p_value": primary[0]["srm_p_value"] if primary else None,
        "verdicts": {r["variant"]: r["verdict"] for r in primary},
        "rows": rows,
        "built_at": built,
    }

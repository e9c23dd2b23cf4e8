"""The generator's checkout_button experiment through the experiment statistics: a true lift is found, none is not.

The generator assigns each user a variant and lifts the treatment's purchase rate in the session
that showed the button by `--experiment-lift`; its ground truth counts, per variant, the exposed
users and those who bought in that session (a purchase carrying the experiment's tag: the
project's `checkout_purchase` metric). Those counts go through analytics_core/stats as the dbt
significance table sends them (tests/integration/test_rollups.py checks that the pipeline's counts
equal the truth's). With a lift the verdict must be a win on every seed; without one, false
positives must stay near alpha: the share over many seeds is printed, and only a share far above
5 % fails (with 80 seeds, 13 or more significant results has probability below 1e-4 at 5 %).
"""

from __future__ import annotations

from typing import Any

from analytics_core.funnels import get_definitions
from analytics_core.stats.experiments import analyze
from generator.config import GeneratorConfig
from generator.run import run
from generator.sinks import NullSink

EXPERIMENT = get_definitions().experiments["checkout_button"]
METRIC = "checkout_purchase"


def verdict(seed: int, lift: float, events_per_day: int) -> tuple[str, float | None]:
    config = GeneratorConfig(
        seed=seed, days=1, events_per_day=events_per_day, users=events_per_day, tenants=1, experiment_lift=lift
    )
    arms = run(config, NullSink()).truth.to_dict()["experiments"]["checkout_button"]["variants"]
    document: dict[str, Any] = {
        "metric": METRIC,
        "kind": "conversion",
        "control": EXPERIMENT.control,
        "split": EXPERIMENT.variants,
        "alpha": EXPERIMENT.alpha,
        "variants": {v: {"users": a["exposed_users"], "conversions": a["converters"]} for v, a in arms.items()},
    }
    (row,) = analyze(document)
    return row.verdict, row.absolute_p_value


def test_the_project_measures_the_generators_lift_with_its_primary_metric() -> None:
    metric = EXPERIMENT.metrics[EXPERIMENT.primary]
    assert EXPERIMENT.primary == METRIC and metric.kind == "conversion" and metric.event_type == "purchase"
    assert set(metric.where["experiment_variant"]) == set(EXPERIMENT.variants)  # the tagged purchase


def test_a_true_lift_is_a_significant_win_on_every_seed() -> None:
    verdicts = [verdict(seed, 0.3, 30_000)[0] for seed in range(10)]
    assert verdicts == ["win"] * 10


def test_without_a_lift_false_positives_stay_near_alpha() -> None:
    results = [verdict(seed, 0.0, 30_000) for seed in range(100, 180)]
    significant = sum(1 for v, _ in results if v in ("win", "loss"))
    share = significant / len(results)
    print(f"\nno lift: {significant} of {len(results)} seeds significant ({share:.1%}; alpha {EXPERIMENT.alpha:.0%})")
    assert all(v != "srm" for v, _ in results)
    assert significant < 13

"""A/B experiment significance from per-variant sums: one implementation for dbt, the `analytics` command and the API.

The warehouse holds per-variant sufficient statistics (users, conversions or sums and sums of
squares), so every number here comes from those, never from rows: dbt builds them in SQL and calls
`experiment_analyze` (analytics_core/stats/duckdb_udf.py), `analytics experiments analyze` reads
them from a file. analytics_core/stats/document.py reads and checks the document (its format and
what it refuses), analytics_core/stats/estimates.py has the tests on two arms and the reference
each matches; this module makes the rows, one per non-control variant, and their verdict.

**Verdict.** `srm` when the SRM p-value is below 0.001 (do not trust the split), else `win` or
`loss` when the primary p-value is below alpha (the sign of the absolute difference read with the
metric's direction), else `not_significant_yet`. The primary p-value is the absolute difference's
(z-test, Welch, or the CUPED t-test), the sequential one when the metric is sequential. A p-value
that cannot be computed is not significant; an SRM p-value that cannot be computed does not stop
the verdict (cannot_compute says why it is missing).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeVar

from analytics_core.stats.document import Kind, Metric, parse
from analytics_core.stats.estimates import (
    _OUT_OF_RANGE,
    Bayes,
    CannotCompute,
    Estimate,
    _mean,
    _note,
    arm,
    bayesian,
    cuped_theta,
    sequential_t,
    srm_p_value,
    two_proportion_z,
    welch_t,
)

T = TypeVar("T")
Verdict = Literal["srm", "win", "loss", "not_significant_yet"]

SRM_THRESHOLD = 0.001


@dataclass(frozen=True)
class Row:
    """One variant against control for one metric; numbers that cannot be computed are None, cannot_compute says why."""

    metric: str
    kind: Kind
    variant: str
    control: str
    control_users: int
    variant_users: int
    control_mean: float | None
    variant_mean: float | None
    absolute_lift: float | None
    absolute_ci_low: float | None
    absolute_ci_high: float | None
    absolute_p_value: float | None
    relative_lift: float | None
    relative_ci_low: float | None
    relative_ci_high: float | None
    relative_p_value: float | None
    chance_to_win: float | None
    risk_control: float | None
    risk_variant: float | None
    srm_p_value: float | None
    verdict: Verdict
    cannot_compute: str | None
    cuped: bool
    sequential: bool
    alpha: float

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON-safe values (str, int, finite float, bool, None)."""
        return asdict(self)


def analyze(document: str | bytes | Mapping[str, Any] | list[Any]) -> list[Row]:
    """The significance rows of every metric in the document: one per non-control variant, in the document's order."""
    return [row for metric in parse(document) for row in analyze_metric(metric)]


def rows_json(rows: list[Row]) -> str:
    """The rows as a JSON array, the format `experiment_analyze` and `--json` answer."""
    return json.dumps([r.to_dict() for r in rows], allow_nan=False)


def analyze_metric(m: Metric) -> list[Row]:
    """One metric's rows, its SRM p-value computed once and repeated on each."""
    reasons: list[str] = []
    srm = _attempt(lambda: srm_p_value(m), reasons)
    return [_compare(m, name, srm, list(reasons)) for name in m.variants if name != m.control]


def _attempt(compute: Callable[[], T], reasons: list[str]) -> T | None:
    """compute(), or None with the rule it hit added to reasons."""
    try:
        return compute()
    except CannotCompute as err:
        _note(reasons, str(err))
    except ArithmeticError:  # overflow, or a division by an underflowed 0
        _note(reasons, _OUT_OF_RANGE)
    return None


def _compare(m: Metric, name: str, srm: float | None, reasons: list[str]) -> Row:
    control, variant = m.variants[m.control], m.variants[name]
    if control.users == 0:
        _note(reasons, f"the control ({m.control}) has no users")
    if variant.users == 0:
        _note(reasons, f"the variant ({name}) has no users")
    absolute = relative = Estimate()
    bayes: Bayes | None = None
    theta = cuped_theta(control, variant) if control.users and variant.users else 0.0
    cuped = theta != 0.0
    if control.users and variant.users:
        a, b = arm(control, theta), arm(variant, theta)
        if m.sequential:
            tuning = m.sequential_tuning_parameter
            found_abs = _attempt(lambda: sequential_t(a, b, m.alpha, tuning, False), reasons)
            found_rel = _attempt(lambda: sequential_t(a, b, m.alpha, tuning, True), reasons)
        else:
            if m.kind == "continuous" or cuped:
                found_abs = _attempt(lambda: welch_t(a, b, m.alpha, False, gbstats_guards=cuped), reasons)
            else:
                found_abs = _attempt(lambda: two_proportion_z(control, variant, m.alpha, reasons), reasons)
            found_rel = _attempt(lambda: welch_t(a, b, m.alpha, True, gbstats_guards=True), reasons)
        bayes = _attempt(lambda: bayesian(a, b, m.higher_is_better), reasons)
        absolute = found_abs or Estimate(b.mean - a.mean)
        relative = found_rel or Estimate((b.mean - a.mean) / a.unadjusted_mean if a.unadjusted_mean else None)
    values: dict[str, Any] = {
        "metric": m.metric,
        "kind": m.kind,
        "variant": name,
        "control": m.control,
        "control_users": control.users,
        "variant_users": variant.users,
        "control_mean": _mean(control.post, control.users) if control.users else None,
        "variant_mean": _mean(variant.post, variant.users) if variant.users else None,
        "absolute_lift": absolute.point,
        "absolute_ci_low": absolute.low,
        "absolute_ci_high": absolute.high,
        "absolute_p_value": absolute.p_value,
        "relative_lift": relative.point,
        "relative_ci_low": relative.low,
        "relative_ci_high": relative.high,
        "relative_p_value": relative.p_value,
        "chance_to_win": bayes.chance_to_win if bayes else None,
        "risk_control": bayes.risk_control if bayes else None,
        "risk_variant": bayes.risk_variant if bayes else None,
        "srm_p_value": srm,
    }
    for key, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            values[key] = None
            _note(reasons, _OUT_OF_RANGE)
    return Row(
        **values,
        verdict=_verdict(values["srm_p_value"], values["absolute_p_value"], values["absolute_lift"], m),
        cannot_compute="; ".join(reasons) or None,
        cuped=cuped,
        sequential=m.sequential,
        alpha=m.alpha,
    )


def _verdict(srm: float | None, p_value: float | None, lift: float | None, m: Metric) -> Verdict:
    if srm is not None and srm < SRM_THRESHOLD:
        return "srm"
    if p_value is not None and lift and p_value < m.alpha:
        return "win" if (lift > 0) == m.higher_is_better else "loss"
    return "not_significant_yet"

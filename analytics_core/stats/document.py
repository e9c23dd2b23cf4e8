"""The input document of the experiment statistics and `parse`, which reads and checks it.

One object per metric or a list of them (JSON text or the parsed value)::

    {"metric": "checkout", "kind": "conversion", "control": "control",
     "split": {"control": 0.5, "treatment": 0.5},
     "alpha": 0.05, "sequential": false, "sequential_tuning_parameter": 5000, "higher_is_better": true,
     "variants": {"control":   {"users": 1000, "conversions": 100},
                  "treatment": {"users": 1010, "conversions": 121}}}

`metric`, `kind` ("conversion" or "continuous"), `control`, `split` and `variants` (two or more)
are required; `alpha` (0.05), `sequential` (false), `sequential_tuning_parameter` (5000) and
`higher_is_better` (true) have those defaults. Per variant: `users` and `conversions` (integers,
conversions <= users) for a conversion metric; `users`, `sum` and `sum_squares` for a continuous
one. CUPED, on every variant or none: `pre_sum`, `pre_sum_squares` and `sum_products` (the sum of
post x pre per user); a conversion metric may leave out `pre_sum_squares`, and its pre-period
value is then 0/1 too (`pre_sum` pre-period converters, `sum_products` users converting in both,
a gbstats ProportionStatistic). `split` gives each variant's planned share of users.

**Refusals.** A document of the wrong shape (a field missing, of the wrong type, negative users,
conversions above users, sum_squares below sum^2 / users, an unknown kind or field) raises
ValueError naming the field and the rule. Data that leaves a number undefined gives the row
anyway (analytics_core/stats/experiments.py), that number None and `cannot_compute` naming the
rule: a variant without users; one user where a variance needs two; no variance in both arms
(0 % or 100 % conversion in both) for the z-test and Welch; and, for every test taken from gbstats
(relative lift, chance to win, CUPED, sequential), gbstats' own refusals: a control mean of 0 or
no variance in either arm. A split that does not sum to 1 or does not name exactly the variants
leaves srm_p_value None. Sums near the ends of double precision that overflow on the way give
None too. No number is NaN or infinite.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["conversion", "continuous"]

DEFAULT_ALPHA = 0.05
DEFAULT_SEQUENTIAL_TUNING = 5000.0  # gbstats' SequentialConfig default

_METRIC_FIELDS = {
    "metric", "kind", "control", "split", "alpha", "sequential", "sequential_tuning_parameter", "higher_is_better",
    "variants",
}  # fmt: skip
_PRE_FIELDS = ("pre_sum", "pre_sum_squares", "sum_products")
_VARIANT_FIELDS: dict[str, tuple[str, ...]] = {
    "conversion": ("users", "conversions", *_PRE_FIELDS),
    "continuous": ("users", "sum", "sum_squares", *_PRE_FIELDS),
}


@dataclass(frozen=True)
class Moments:
    """Sum and sum of squares of one period's per-user values; `binary`: 0/1 values (gbstats ProportionStatistic)."""

    sum: float
    sum_squares: float
    binary: bool


@dataclass(frozen=True)
class Variant:
    users: int
    post: Moments
    pre: Moments | None = None
    sum_products: float = 0.0


@dataclass(frozen=True)
class Metric:
    metric: str
    kind: Kind
    control: str
    split: dict[str, float]
    variants: dict[str, Variant]
    alpha: float = DEFAULT_ALPHA
    sequential: bool = False
    sequential_tuning_parameter: float = DEFAULT_SEQUENTIAL_TUNING
    higher_is_better: bool = True


def parse(document: str | bytes | Mapping[str, Any] | list[Any]) -> list[Metric]:
    """The metrics of a document (JSON text, one metric object or a list of them); ValueError on a malformed one."""
    if isinstance(document, str | bytes):
        try:
            document = json.loads(document, parse_constant=_refuse_constant)
        except json.JSONDecodeError as err:
            raise ValueError(f"the document is not JSON: {err}") from None
    if isinstance(document, Mapping):
        return [_metric(document, "")]
    if isinstance(document, list) and document:
        return [_metric(item, f"[{i}].") for i, item in enumerate(document)]
    raise ValueError("the document must be a metric object or a non-empty list of them")


def _refuse_constant(name: str) -> float:
    raise ValueError(f"the document holds {name}: numbers must be finite")


def _metric(raw: object, at: str) -> Metric:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{at or 'the document'} must be a metric object")
    unknown = sorted(set(raw) - _METRIC_FIELDS)
    if unknown:
        raise ValueError(f"{at}{unknown[0]}: unknown field; a metric has {', '.join(sorted(_METRIC_FIELDS))}")
    name = _required(raw, "metric", at)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{at}metric must be a non-empty string")
    kind: Kind = _required(raw, "kind", at)
    if kind not in ("conversion", "continuous"):
        raise ValueError(f"{at}kind must be 'conversion' or 'continuous', not {kind!r}")
    variants_raw = _required(raw, "variants", at)
    if not isinstance(variants_raw, Mapping) or len(variants_raw) < 2:
        raise ValueError(f"{at}variants must be an object of two or more variants")
    variants = {str(k): _variant(v, kind, f"{at}variants.{k}.") for k, v in variants_raw.items()}
    with_pre = [k for k, v in variants.items() if v.pre is not None]
    if with_pre and len(with_pre) < len(variants):
        missing = next(k for k in variants if k not in with_pre)
        raise ValueError(f"{at}variants.{missing}: CUPED needs pre_sum and sum_products on every variant or on none")
    if len({v.pre.binary for v in variants.values() if v.pre is not None}) > 1:
        raise ValueError(f"{at}variants: give pre_sum_squares on every variant or on none")
    control = _required(raw, "control", at)
    if not isinstance(control, str) or control not in variants:
        raise ValueError(f"{at}control must name one of the variants ({', '.join(variants)}), not {control!r}")
    split = _required(raw, "split", at)
    if not isinstance(split, Mapping):
        raise ValueError(f"{at}split must be an object of variant -> planned fraction")
    return Metric(
        metric=name,
        kind=kind,
        control=control,
        split={str(k): _number(v, f"{at}split.{k}", positive=True) for k, v in split.items()},
        variants=variants,
        alpha=_alpha(raw.get("alpha", DEFAULT_ALPHA), f"{at}alpha"),
        sequential=_boolean(raw.get("sequential", False), f"{at}sequential"),
        sequential_tuning_parameter=_number(
            raw.get("sequential_tuning_parameter", DEFAULT_SEQUENTIAL_TUNING),
            f"{at}sequential_tuning_parameter",
            positive=True,
        ),
        higher_is_better=_boolean(raw.get("higher_is_better", True), f"{at}higher_is_better"),
    )


def _variant(raw: object, kind: Kind, at: str) -> Variant:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{at.rstrip('.')} must be an object")
    allowed = _VARIANT_FIELDS[kind]
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ValueError(f"{at}{unknown[0]}: unknown field for a {kind} metric; a variant has {', '.join(allowed)}")
    users = _count(_required(raw, "users", at), f"{at}users")
    if kind == "conversion":
        conversions = _count(_required(raw, "conversions", at), f"{at}conversions")
        if conversions > users:
            raise ValueError(f"{at}conversions ({conversions}) must not exceed users ({users})")
        post = Moments(conversions, conversions, binary=True)
    else:
        post = _moments(raw, "sum", "sum_squares", users, at)
    if "pre_sum" not in raw and "sum_products" not in raw:
        if "pre_sum_squares" in raw:
            raise ValueError(f"{at}pre_sum_squares: CUPED needs pre_sum and sum_products too")
        return Variant(users, post)
    for field in ("pre_sum", "sum_products"):
        _required(raw, field, at)
    if kind == "conversion" and "pre_sum_squares" not in raw:
        pre_users = _count(raw["pre_sum"], f"{at}pre_sum")
        both = _count(raw["sum_products"], f"{at}sum_products")
        if pre_users > users:
            raise ValueError(f"{at}pre_sum ({pre_users}) must not exceed users ({users}) for a 0/1 pre-period value")
        if both > min(post.sum, pre_users):
            raise ValueError(f"{at}sum_products ({both}) must not exceed conversions or pre_sum")
        return Variant(users, post, Moments(pre_users, pre_users, binary=True), both)
    _required(raw, "pre_sum_squares", at)
    pre = _moments(raw, "pre_sum", "pre_sum_squares", users, at)
    products = _number(raw["sum_products"], f"{at}sum_products")
    if users == 0 and products != 0:
        raise ValueError(f"{at}sum_products must be 0 when users is 0")
    return Variant(users, post, pre, products)


def _moments(raw: Mapping[str, Any], total: str, squares: str, users: int, at: str) -> Moments:
    s = _number(_required(raw, total, at), f"{at}{total}")
    ss = _number(_required(raw, squares, at), f"{at}{squares}")
    if ss < 0:
        raise ValueError(f"{at}{squares} must be >= 0, not {ss}")
    if users == 0 and (s != 0 or ss != 0):
        raise ValueError(f"{at}{total} and {squares} must be 0 when users is 0")
    least = s * (s / users) if users else 0.0  # not s * s / users: s * s overflows first
    if least > ss * (1 + 1e-9) + 1e-300:
        raise ValueError(f"{at}{squares} ({ss}) must be at least {total}^2 / users ({least}): no such data")
    return Moments(s, ss, binary=False)


def _required(raw: Mapping[str, Any], field: str, at: str) -> Any:
    if field not in raw:
        raise ValueError(f"{at}{field} is missing")
    return raw[field]


def _number(value: object, at: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{at} must be a finite number, not {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{at} must be > 0, not {value}")
    return float(value)


def _count(value: object, at: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{at} must be an integer >= 0, not {value!r}")
    return value


def _alpha(value: object, at: str) -> float:
    alpha = _number(value, at)
    if not 0 < alpha < 1:
        raise ValueError(f"{at} must be between 0 and 1, not {alpha}")
    return alpha


def _boolean(value: object, at: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{at} must be true or false, not {value!r}")
    return value

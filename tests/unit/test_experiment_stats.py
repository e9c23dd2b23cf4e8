"""analytics_core.stats.experiments against statsmodels 0.15, scipy 1.17 and gbstats 0.8 over seeded random experiments.

Every p-value, bound and probability a reference gives must match by `close` (the one accuracy rule
here); where the reference gives nothing (NaN, or gbstats' error output) ours must be None. The
references see the same per-variant sums, or for Welch the raw values the sums came from.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
from gbstats.bayesian.tests import EffectBayesianABTest, EffectBayesianConfig
from gbstats.frequentist.tests import FrequentistConfig, SequentialConfig, SequentialTwoSidedTTest, TwoSidedTTest
from gbstats.models.statistics import (
    ProportionStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    compute_theta,
)
from gbstats.utils import check_srm
from scipy import stats
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest
from typer.testing import CliRunner

from analytics_cli.main import app
from analytics_core.stats import duckdb_udf
from analytics_core.stats.experiments import analyze, rows_json

# gbstats' sequential e-value overflows numpy's exp on very significant results (p-value 0); ours is taken in logs.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")

Ref = dict[str, float | None]
NUMBERS = (
    "absolute_lift", "absolute_ci_low", "absolute_ci_high", "absolute_p_value",
    "relative_lift", "relative_ci_low", "relative_ci_high", "relative_p_value",
    "chance_to_win", "risk_control", "risk_variant", "srm_p_value",
)  # fmt: skip


def close(ours: float | None, ref: float | None) -> bool:
    """The accuracy rule of every comparison: |ours - ref| <= 1e-6 + 1e-4 |ref|, and None exactly where ref is."""
    if ours is None or ref is None:
        return ours is None and ref is None
    return abs(ours - ref) <= 1e-6 + 1e-4 * abs(ref)


def finite(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


# --- random experiments ----------------------------------------------------------------------------------


def names(k: int) -> list[str]:
    return ["control", "treatment", "b", "c"][:k]


def split_and_users(rng: np.random.Generator, k: int, n: int, srm: bool) -> tuple[dict[str, float], list[int]]:
    shares = rng.dirichlet(np.full(k, 8.0)) if rng.random() < 0.3 else np.full(k, 1 / k)
    shares = np.round(shares, 4)
    shares[-1] = round(1 - shares[:-1].sum(), 4)
    expected = shares * n * k
    users = rng.poisson(expected * (rng.uniform(0.8, 1.2, k) if srm else 1.0))
    return {v: float(s) for v, s in zip(names(k), shares, strict=True)}, [int(u) for u in users]


def options(rng: np.random.Generator, sequential: bool | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"alpha": float(rng.choice([0.05, 0.1, 0.01]))}
    if rng.random() < 0.3:
        out["higher_is_better"] = False
    out["sequential"] = bool(rng.random() < 0.25) if sequential is None else sequential
    if out["sequential"] and rng.random() < 0.5:
        out["sequential_tuning_parameter"] = float(rng.choice([500.0, 20000.0]))
    return out


def conversion_doc(rng: np.random.Generator, *, k: int = 2, n: int, extreme: bool = False, cuped: str = "") -> dict:
    split, users = split_and_users(rng, k, n, srm=rng.random() < 0.3)
    base = float(rng.choice([0.002, 0.03, 0.1, 0.4, 0.8]))
    variants: dict[str, dict[str, Any]] = {}
    for name, u in zip(names(k), users, strict=True):
        p = min(base * rng.uniform(0.7, 1.4), 1.0)
        if extreme:
            p = float(rng.choice([0.0, 1.0, p]))
        pre = rng.random(u) < min(base * 1.2, 1.0)
        post = np.where(pre, rng.random(u) < min(2 * p, 1.0), rng.random(u) < p * 0.6)
        variant: dict[str, Any] = {"users": u, "conversions": int(post.sum())}
        if cuped == "binary":
            variant |= {"pre_sum": int(pre.sum()), "sum_products": int((post & pre).sum())}
        elif cuped == "continuous":
            spend = rng.gamma(2.0, 10.0, u) * (1 + post)
            variant |= {
                "pre_sum": float(spend.sum()),
                "pre_sum_squares": float((spend**2).sum()),
                "sum_products": float((spend * post).sum()),
            }
        variants[name] = variant
    return {"metric": "conversion", "kind": "conversion", "control": "control", "split": split, "variants": variants}


def continuous_doc(rng: np.random.Generator, *, k: int = 2, n: int, cuped: bool = False) -> tuple[dict, dict]:
    """A continuous metric's document and the raw per-user values behind it (name -> array)."""
    split, users = split_and_users(rng, k, n, srm=rng.random() < 0.3)
    scale, shape = float(rng.choice([1.0, 40.0, 1000.0])), float(rng.choice([0.5, 2.0, 10.0]))
    variants, raw = {}, {}
    for name, u in zip(names(k), users, strict=True):
        pre = rng.gamma(shape, scale, u)
        post = 0.6 * pre * rng.uniform(0.9, 1.15) + rng.gamma(shape, scale * 0.5, u)
        variant: dict[str, Any] = {"users": u, "sum": float(post.sum()), "sum_squares": float((post**2).sum())}
        if cuped:
            variant |= {
                "pre_sum": float(pre.sum()),
                "pre_sum_squares": float((pre**2).sum()),
                "sum_products": float((post * pre).sum()),
            }
        variants[name], raw[name] = variant, post
    doc = {"metric": "continuous", "kind": "continuous", "control": "control", "split": split, "variants": variants}
    return doc, raw


def big_continuous_doc(rng: np.random.Generator, k: int = 2) -> dict:
    """Sums of millions of users drawn from their moments, no raw values."""
    split, users = split_and_users(rng, k, int(10 ** rng.uniform(4, 7)), srm=rng.random() < 0.3)
    variants = {}
    for name, u in zip(names(k), users, strict=True):
        mean, sd = 20 * rng.uniform(0.995, 1.005), 30.0 * rng.uniform(0.9, 1.1)
        variants[name] = {"users": u, "sum": mean * u, "sum_squares": (sd * sd * (u - 1) + mean * mean * u)}
    return {"metric": "big", "kind": "continuous", "control": "control", "split": split, "variants": variants}


# --- the references --------------------------------------------------------------------------------------


def gb_statistic(kind: str, v: dict) -> Any:
    """The gbstats statistic of one variant, built the way gbstats' own runner builds it."""
    n = v["users"]
    post: Any = (
        ProportionStatistic(n=n, sum=v["conversions"])
        if kind == "conversion"
        else SampleMeanStatistic(n=n, sum=v["sum"], sum_squares=v["sum_squares"])
    )
    if "pre_sum" not in v:
        return post
    pre: Any = (
        SampleMeanStatistic(n=n, sum=v["pre_sum"], sum_squares=v["pre_sum_squares"])
        if "pre_sum_squares" in v
        else ProportionStatistic(n=n, sum=v["pre_sum"])
    )
    return RegressionAdjustedStatistic(
        n=n, post_statistic=post, pre_statistic=pre, post_pre_sum_of_products=v["sum_products"], theta=0
    )


def gb_frequentist(result: Any) -> tuple[float | None, float | None, float | None, float | None]:
    if result.error_message:
        return None, None, None, None
    return result.expected, result.ci[0], result.ci[1], result.p_value


def reference_srm(doc: dict) -> float | None:
    split, variants = doc["split"], doc["variants"]
    if set(split) != set(variants) or abs(sum(split.values()) - 1) > 1e-6:
        return None
    users = np.array([v["users"] for v in variants.values()], dtype=float)
    if users.sum() == 0:
        return None
    expected = np.array([split[k] for k in variants]) / sum(split.values()) * users.sum()
    p = float(stats.chisquare(users, f_exp=expected).pvalue)
    assert close(p, check_srm(list(users), [split[k] for k in variants]))  # gbstats' own SRM check agrees
    return p


def reference_rows(doc: dict, raw: dict[str, np.ndarray] | None = None) -> Iterator[tuple[str, Ref]]:
    """Each variant's numbers as the reference libraries give them."""
    kind, variants, control = doc["kind"], doc["variants"], doc["control"]
    alpha = doc.get("alpha", 0.05)
    srm = reference_srm(doc)
    c = variants[control]
    for name, v in variants.items():
        if name == control:
            continue
        ref: Ref = dict.fromkeys(NUMBERS)
        ref["srm_p_value"] = srm
        if c["users"] == 0 or v["users"] == 0:
            yield name, ref
            continue

        def stats_pair(c: dict = c, v: dict = v) -> tuple[Any, Any]:
            return gb_statistic(kind, c), gb_statistic(kind, v)  # fresh: gbstats writes theta into them

        a, b = stats_pair()
        cuped = isinstance(a, RegressionAdjustedStatistic) and compute_theta(a, b) != 0
        if doc.get("sequential"):
            tuning = doc.get("sequential_tuning_parameter", 5000)
            for prefix, difference in (("absolute", "absolute"), ("relative", "relative")):
                config = SequentialConfig(difference_type=difference, alpha=alpha, sequential_tuning_parameter=tuning)
                values = gb_frequentist(SequentialTwoSidedTTest(*stats_pair(), config).compute_result())
                fields = [f"{prefix}_lift", f"{prefix}_ci_low", f"{prefix}_ci_high", f"{prefix}_p_value"]
                ref |= dict(zip(fields, values, strict=True))
        else:
            if kind == "conversion" and not cuped:
                ref |= reference_z(c, v, alpha)
            elif kind == "continuous" and not cuped:
                ref |= reference_welch_raw(raw[control], raw[name], alpha) if raw else reference_welch_sums(c, v, alpha)
            else:
                ref |= reference_gbstats_absolute(*stats_pair(), alpha)
            values = gb_frequentist(
                TwoSidedTTest(
                    *stats_pair(), FrequentistConfig(difference_type="relative", alpha=alpha)
                ).compute_result()
            )
            fields = ["relative_lift", "relative_ci_low", "relative_ci_high", "relative_p_value"]
            ref |= dict(zip(fields, values, strict=True))
        config = EffectBayesianConfig(inverse=not doc.get("higher_is_better", True))
        bayes = EffectBayesianABTest(*stats_pair(), config).compute_result()
        if not bayes.error_message:
            ref |= {"chance_to_win": bayes.chance_to_win, "risk_control": bayes.risk[0], "risk_variant": bayes.risk[1]}
        ref["cuped"] = cuped
        yield name, ref


def reference_z(c: dict, v: dict, alpha: float) -> Ref:
    count, nobs = [v["conversions"], c["conversions"]], [v["users"], c["users"]]
    with np.errstate(all="ignore"):
        p = finite(proportions_ztest(count, nobs)[1])
        low, high = confint_proportions_2indep(*count[:1], nobs[0], count[1], nobs[1], method="wald", alpha=alpha)
    diff = v["conversions"] / v["users"] - c["conversions"] / c["users"]
    bounds = (None, None) if low == high else (float(low), float(high))  # a zero-width Wald interval: no variance
    return {"absolute_lift": diff, "absolute_ci_low": bounds[0], "absolute_ci_high": bounds[1], "absolute_p_value": p}


def reference_welch_raw(control: np.ndarray, variant: np.ndarray, alpha: float) -> Ref:
    with np.errstate(all="ignore"):
        result = stats.ttest_ind(variant, control, equal_var=False)
        ci = result.confidence_interval(1 - alpha)
    return {
        "absolute_lift": float(variant.mean() - control.mean()),
        "absolute_ci_low": finite(ci.low),
        "absolute_ci_high": finite(ci.high),
        "absolute_p_value": finite(result.pvalue),
    }


def reference_welch_sums(c: dict, v: dict, alpha: float) -> Ref:
    """scipy's Welch test from the sums' means and sample variances; the interval from scipy's t quantile."""
    (ma, va, na), (mb, vb, nb) = ((x["sum"] / x["users"], sample_variance(x), x["users"]) for x in (c, v))
    if va <= 0 and vb <= 0:  # scipy: t = +-inf, p = 0 (or NaN for equal means); ours: cannot compute, by rule
        return {"absolute_lift": mb - ma}
    with np.errstate(all="ignore"):
        result = stats.ttest_ind_from_stats(mb, np.sqrt(vb), nb, ma, np.sqrt(va), na, equal_var=False)
        df = (va / na + vb / nb) ** 2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
        width = stats.t.ppf(1 - alpha / 2, df) * np.sqrt(va / na + vb / nb)
    diff = mb - ma
    return {
        "absolute_lift": diff,
        "absolute_ci_low": finite(diff - width),
        "absolute_ci_high": finite(diff + width),
        "absolute_p_value": finite(result.pvalue),
    }


def sample_variance(x: dict) -> np.float64:
    n = np.float64(x["users"])
    with np.errstate(all="ignore"):
        return (x["sum_squares"] - x["sum"] ** 2 / n) / (n - 1)  # NaN for one user, as scipy has it


def reference_gbstats_absolute(a: Any, b: Any, alpha: float) -> Ref:
    config = FrequentistConfig(difference_type="absolute", alpha=alpha)
    values = gb_frequentist(TwoSidedTTest(a, b, config).compute_result())
    return dict(zip(["absolute_lift", "absolute_ci_low", "absolute_ci_high", "absolute_p_value"], values, strict=True))


def check(doc: dict, raw: dict[str, np.ndarray] | None = None) -> list[dict]:
    """Our rows of doc against the references, field by field; the rows as dicts."""
    ours = {r.variant: r for r in analyze(doc)}
    json.dumps([r.to_dict() for r in ours.values()], allow_nan=False)
    for name, ref in reference_rows(doc, raw):
        row = ours[name]
        for field in NUMBERS:
            if field in ("absolute_lift", "relative_lift") and ref[field] is None:
                continue  # the point estimate is given even when its test declines
            assert close(getattr(row, field), ref[field]), (field, getattr(row, field), ref[field], row, doc)
        if "cuped" in ref:
            assert row.cuped == ref["cuped"]
        assert row.verdict == expected_verdict(doc, row, ref), (row, ref)
    return [r.to_dict() for r in ours.values()]


def expected_verdict(doc: dict, row: Any, ref: Ref) -> str:
    if ref["srm_p_value"] is not None and ref["srm_p_value"] < 0.001:
        return "srm"
    p, lift = ref["absolute_p_value"], ref["absolute_lift"]
    if p is not None and lift and p < doc.get("alpha", 0.05):
        return "win" if (lift > 0) == doc.get("higher_is_better", True) else "loss"
    return row.verdict if p is not None and abs(p - doc.get("alpha", 0.05)) < 1e-6 else "not_significant_yet"


def many(seed: int, count: int, make: Callable[[np.random.Generator], dict]) -> Iterator[dict]:
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield make(rng) | options(rng)


# --- comparisons -----------------------------------------------------------------------------------------


def test_conversion_metrics_match_statsmodels_and_gbstats() -> None:
    verdicts = set()
    for doc in many(1, 160, lambda rng: conversion_doc(rng, n=int(10 ** rng.uniform(2, 5.5)))):
        verdicts |= {r["verdict"] for r in check(doc)}
    assert verdicts == {"win", "loss", "not_significant_yet", "srm"}


def test_conversion_metrics_with_tiny_samples_and_0_or_100_percent() -> None:
    reasons = set()
    for doc in many(2, 160, lambda rng: conversion_doc(rng, n=int(rng.integers(1, 12)), extreme=True)):
        reasons |= {r["cannot_compute"] for r in check(doc) if r["cannot_compute"]}
    assert any("0 % or 100 %" in r for r in reasons) and any("control mean is 0" in r for r in reasons)


def test_continuous_metrics_match_scipy_welch_and_gbstats() -> None:
    rng = np.random.default_rng(3)
    for _ in range(120):
        doc, raw = continuous_doc(rng, n=int(10 ** rng.uniform(0.4, 3.7)), k=int(rng.choice([2, 2, 3])))
        check(doc | options(rng), raw)


def test_continuous_metrics_of_millions_of_users() -> None:
    for doc in many(4, 40, lambda rng: big_continuous_doc(rng, k=int(rng.choice([2, 3])))):
        check(doc)


def test_three_and_four_variants_with_srm() -> None:
    srm_rows = 0
    for doc in many(5, 40, lambda rng: conversion_doc(rng, k=int(rng.choice([3, 4])), n=int(10 ** rng.uniform(3, 5)))):
        srm_rows += sum(r["verdict"] == "srm" for r in check(doc))
    assert srm_rows > 10


def test_cuped_matches_gbstats_regression_adjustment() -> None:
    rng = np.random.default_rng(6)
    applied = 0
    for _ in range(60):
        doc, _ = continuous_doc(rng, n=int(10 ** rng.uniform(1, 3.5)), k=int(rng.choice([2, 3])), cuped=True)
        applied += sum(r["cuped"] for r in check(doc | options(rng)))
    for _ in range(60):
        doc = conversion_doc(rng, n=int(10 ** rng.uniform(1, 4)), cuped=str(rng.choice(["binary", "continuous"])))
        applied += sum(r["cuped"] for r in check(doc | options(rng)))
    assert applied > 100


def test_sequential_matches_gbstats_always_valid_intervals() -> None:
    rng = np.random.default_rng(7)
    for _ in range(40):
        check(conversion_doc(rng, n=int(10 ** rng.uniform(1, 5))) | options(rng, sequential=True))
        doc, raw = continuous_doc(rng, n=int(10 ** rng.uniform(1, 3.5)), cuped=bool(rng.random() < 0.5))
        rows = check(doc | options(rng, sequential=True), raw)
        assert all(r["sequential"] for r in rows)


def test_sequential_is_wider_than_the_fixed_horizon_interval() -> None:
    doc = conversion_doc(np.random.default_rng(8), n=20000)
    fixed, sequential = analyze(doc)[0], analyze(doc | {"sequential": True})[0]
    assert (
        fixed.relative_ci_low and sequential.relative_ci_low and fixed.relative_ci_high and sequential.relative_ci_high
    )
    assert sequential.relative_ci_low < fixed.relative_ci_low and sequential.relative_ci_high > fixed.relative_ci_high


# --- degenerate data: rows with None and a reason -----------------------------------------------------------


def doc_of(kind: str, control: dict, variant: dict, **extra: Any) -> dict:
    split = extra.pop("split", {"control": 0.5, "treatment": 0.5})
    variants = {"control": control, "treatment": variant}
    return {"metric": "m", "kind": kind, "control": "control", "split": split, "variants": variants} | extra


A100, B100 = {"users": 100, "conversions": 5}, {"users": 100, "conversions": 9}
DEGENERATE = {
    "variant without users": (
        doc_of("conversion", {"users": 100, "conversions": 5}, {"users": 0, "conversions": 0}),
        "has no users",
    ),
    "control without users": (
        doc_of("continuous", {"users": 0, "sum": 0, "sum_squares": 0}, {"users": 10, "sum": 5, "sum_squares": 9}),
        "the control (control) has no users",
    ),
    "one user of a continuous metric": (
        doc_of("continuous", {"users": 1, "sum": 3, "sum_squares": 9}, {"users": 50, "sum": 80, "sum_squares": 300}),
        "the control has 1 user: a variance needs 2",
    ),
    "zero variance in both arms": (
        doc_of("continuous", {"users": 5, "sum": 10, "sum_squares": 20}, {"users": 7, "sum": 21, "sum_squares": 63}),
        "no variance in either arm",
    ),
    "0 % in both arms": (
        doc_of("conversion", {"users": 500, "conversions": 0}, {"users": 480, "conversions": 0}),
        "0 % or 100 % conversion in both",
    ),
    "100 % in both arms": (
        doc_of("conversion", {"users": 30, "conversions": 30}, {"users": 31, "conversions": 31}),
        "0 % or 100 % conversion in both",
    ),
    "0 % against 100 %": (
        doc_of("conversion", {"users": 30, "conversions": 0}, {"users": 31, "conversions": 31}),
        "Wald interval: no variance in either arm",
    ),
    "split summing to 0.9": (
        doc_of("conversion", A100, B100, split={"control": 0.45, "treatment": 0.45}),
        "sum to 0.9, not 1",
    ),
    "split naming an unknown variant": (
        doc_of("conversion", A100, B100, split={"control": 0.5, "nope": 0.5}),
        "the split names 'nope'",
    ),
    "split missing a variant": (
        doc_of("conversion", A100, B100, split={"control": 1.0}),
        "no fraction for 'treatment'",
    ),
    "sequential with one flat arm": (
        doc_of("conversion", {"users": 100, "conversions": 10}, {"users": 100, "conversions": 0}, sequential=True),
        "absolute lift: no variance in the variant",
    ),
    "sequential with control at 0 %": (
        doc_of("conversion", {"users": 100, "conversions": 0}, {"users": 100, "conversions": 3}, sequential=True),
        "absolute lift: the control mean is 0",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", DEGENERATE)
def test_degenerate_data_gives_a_row_with_none_and_the_rule(case: str) -> None:
    doc, reason = DEGENERATE[case]
    rows = analyze(doc)
    assert len(rows) == 1 and rows[0].cannot_compute and reason in rows[0].cannot_compute
    text = json.dumps([r.to_dict() for r in rows], allow_nan=False)
    assert rows_json(rows) == text
    assert all(
        value is None or math.isfinite(value) for value in rows[0].to_dict().values() if isinstance(value, float)
    )
    check(doc)


def test_extreme_magnitudes_give_rows_never_an_exception_or_nan() -> None:
    rng = np.random.default_rng(9)
    magnitudes = [0.0, 1e-300, 1e-150, -3.0, 0.5, 7.0, 1e6, 1e150, -1e150]
    for _ in range(600):
        kind = str(rng.choice(["conversion", "continuous"]))
        variants: dict[str, dict[str, float]] = {}
        for name in names(int(rng.choice([2, 3]))):
            users = int(rng.choice([0, 1, 2, 3, 100, 10**6]))
            if kind == "conversion":
                conversions = int(rng.choice([0, users, users // 2]))
                variants[name] = {"users": users, "conversions": conversions}
                if users:
                    variants[name] |= {"pre_sum": users // 3, "sum_products": min(users // 3, conversions)}
                else:
                    variants[name] |= {"pre_sum": 0, "sum_products": 0}
            else:
                mean, pre = (float(rng.choice(magnitudes)) for _ in range(2))
                spread = float(rng.choice([1.0, 1.5, 100.0]))
                variants[name] = {
                    "users": users,
                    "sum": mean * users,
                    "sum_squares": mean * mean * users * spread,
                    "pre_sum": pre * users,
                    "pre_sum_squares": pre * pre * users * spread,
                    "sum_products": mean * pre * users * float(rng.choice([0.0, 1.0, -2.0])),
                }
        shares = dict.fromkeys(variants, 1 / len(variants))
        doc = {"metric": "m", "kind": kind, "control": "control", "split": shares, "variants": variants}
        if any(not math.isfinite(x) for v in variants.values() for x in v.values()):
            continue
        rows = analyze(doc | {"sequential": bool(rng.random() < 0.3)})
        json.loads(rows_json(rows))


def test_a_control_with_one_conversion_user_still_gets_the_z_test() -> None:
    row = check(doc_of("conversion", {"users": 1, "conversions": 1}, {"users": 900, "conversions": 90}))[0]
    assert row["absolute_p_value"] is not None and row["relative_p_value"] is None


def test_unusable_split_leaves_the_verdict_to_the_p_value() -> None:
    doc = doc_of(
        "conversion", {"users": 5000, "conversions": 500}, {"users": 5000, "conversions": 650}, split={"control": 0.3}
    )
    row = analyze(doc)[0]
    assert row.srm_p_value is None and row.verdict == "win"


def test_lower_is_better_flips_the_verdict_and_the_chance_to_win() -> None:
    doc = doc_of("conversion", {"users": 5000, "conversions": 500}, {"users": 5000, "conversions": 650})
    up, down = analyze(doc)[0], analyze(doc | {"higher_is_better": False})[0]
    assert (up.verdict, down.verdict) == ("win", "loss")
    assert up.chance_to_win is not None and down.chance_to_win is not None
    assert close(up.chance_to_win + down.chance_to_win, 1.0)
    assert (up.risk_control, up.risk_variant) == (down.risk_variant, down.risk_control)


# --- malformed documents: ValueError naming the field and the rule ------------------------------------------

GOOD = doc_of("conversion", {"users": 100, "conversions": 10}, {"users": 100, "conversions": 12})
MALFORMED: list[tuple[Any, str]] = [
    ({k: v for k, v in GOOD.items() if k != "kind"}, "kind is missing"),
    (GOOD | {"kind": "revenue"}, "kind must be 'conversion' or 'continuous'"),
    (GOOD | {"variants": {"control": {"users": -1, "conversions": 0}, "treatment": {"users": 1, "conversions": 0}}},
     "variants.control.users must be an integer >= 0"),
    (GOOD | {"variants": {"control": {"users": 10, "conversions": 12}, "treatment": {"users": 1, "conversions": 0}}},
     "variants.control.conversions (12) must not exceed users (10)"),
    (GOOD | {"variants": {"control": {"users": 10}, "treatment": {"users": 1, "conversions": 0}}},
     "variants.control.conversions is missing"),
    (GOOD | {"variants": {"control": {"users": 10, "conversions": 1, "sum": 3}, "treatment": A100}},
     "variants.control.sum: unknown field"),
    (GOOD | {"variants": {"control": {"users": 10, "conversions": 1}}}, "variants must be an object of two or more"),
    (GOOD | {"control": "baseline"}, "control must name one of the variants"),
    (GOOD | {"alpha": 1.5}, "alpha must be between 0 and 1"),
    (GOOD | {"sequential": "yes"}, "sequential must be true or false"),
    (GOOD | {"split": {"control": -0.5, "treatment": 1.5}}, "split.control must be > 0"),
    (GOOD | {"sequental": True}, "sequental: unknown field"),
    (doc_of("continuous", {"users": 10, "sum": 100, "sum_squares": 50}, {"users": 1, "sum": 1, "sum_squares": 1}),
     "variants.control.sum_squares (50.0) must be at least sum^2 / users"),
    (GOOD | {"variants": {"control": {"users": 10, "conversions": 1, "pre_sum": 2, "sum_products": 1},
                          "treatment": {"users": 10, "conversions": 1}}},
     "CUPED needs pre_sum and sum_products on every variant"),
    ('{"metric": "m", "kind": "conversion", "alpha": NaN}', "numbers must be finite"),
    ("{not json", "the document is not JSON"),
    ([], "a non-empty list"),
    ([GOOD, GOOD | {"kind": None}], "[1].kind must be"),
]  # fmt: skip


@pytest.mark.parametrize(("document", "message"), MALFORMED)
def test_malformed_documents_raise_value_error_naming_the_field(document: Any, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        analyze(document)
    assert message in str(raised.value)


# --- DuckDB, the CLI ------------------------------------------------------------------------------------------


def test_duckdb_function_gives_the_same_rows_from_sums_built_in_sql() -> None:
    con = duckdb.connect()
    duckdb_udf.register(con)
    con.execute(
        """
        create table exposures as
        select i as user_id, ['control', 'treatment', 'b'][1 + i % 3] as variant,
               (hash(i) % 100 < 10 + i % 3)::int as converted, (hash(i * 7) % 1000) / 10.0 as revenue
        from range(30000) t(i)
        """
    )
    docs = con.execute(
        """
        with sums as (
            select variant, count(*) as users, sum(converted) as conversions,
                   sum(revenue) as revenue_sum, sum(revenue * revenue) as revenue_sum_squares
            from exposures group by variant
        )
        select
            json_object('metric', 'checkout', 'kind', 'conversion', 'control', 'control',
                        'split', json_object('control', 1/3, 'treatment', 1/3, 'b', 1/3),
                        'variants', json_group_object(variant, json_object(
                            'users', users, 'conversions', conversions))),
            json_object('metric', 'revenue', 'kind', 'continuous', 'control', 'control', 'sequential', true,
                        'split', json_object('control', 1/3, 'treatment', 1/3, 'b', 1/3),
                        'variants', json_group_object(variant, json_object(
                            'users', users, 'sum', revenue_sum, 'sum_squares', revenue_sum_squares)))
        from sums
        """
    ).fetchone()
    assert docs is not None
    for doc in docs:
        answer = con.execute("select experiment_analyze(?)", [doc]).fetchone()
        assert answer is not None and json.loads(answer[0]) == [r.to_dict() for r in analyze(doc)]
        check(json.loads(doc))
        unnested = con.execute("select unnest(experiment_rows(?), recursive := true)", [doc]).fetchall()
        columns = [c[0] for c in con.description or []]
        assert [dict(zip(columns, row, strict=True)) for row in unnested] == [r.to_dict() for r in analyze(doc)]
    assert con.execute("select experiment_analyze(null)").fetchone() == (None,)
    with pytest.raises(duckdb.InvalidInputException, match="kind is missing"):
        con.execute('select experiment_analyze(\'{"metric": "m"}\')').fetchall()


runner = CliRunner()
CLI_DOC = [
    doc_of("conversion", {"users": 10000, "conversions": 1000}, {"users": 10040, "conversions": 1100}),
    doc_of("continuous", {"users": 40, "sum": 400, "sum_squares": 4400}, {"users": 0, "sum": 0, "sum_squares": 0}),
]


def test_cli_prints_a_table_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(CLI_DOC))
    result = runner.invoke(app, ["experiments", "analyze", str(path)])
    assert result.exit_code == 0, result.output
    assert "win" in result.output and "SRM p = 0.7775" in result.output
    assert "cannot compute: the variant (treatment) has no users" in result.output


def test_cli_json_from_stdin_equals_analyze() -> None:
    result = runner.invoke(app, ["experiments", "analyze", "-", "--json"], input=json.dumps(CLI_DOC))
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [r.to_dict() for r in analyze(CLI_DOC)]


def test_cli_exits_2_with_one_line_naming_the_field() -> None:
    bad = doc_of("conversion", {"users": 10, "conversions": 11}, {"users": 10, "conversions": 1})
    result = runner.invoke(app, ["experiments", "analyze", "--json"], input=json.dumps(bad))
    assert result.exit_code == 2
    assert result.output.strip() == "variants.control.conversions (11) must not exceed users (10)"
    missing = runner.invoke(app, ["experiments", "analyze", "/nonexistent/experiment.json"])
    assert missing.exit_code == 2 and "No such file" in missing.output

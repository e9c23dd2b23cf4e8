"""The statistical tests on two arms: each reproduces a library analysts check results with, formula for formula.

None of the libraries is imported (analytics_core/stats/distributions.py has the distributions);
tests/unit/test_experiment_stats.py holds every number to them:

- absolute difference, conversion metric: two-proportion z-test with the pooled standard error
  (statsmodels `proportions_ztest`), Wald interval with the unpooled one (statsmodels
  `confint_proportions_2indep(method="wald")`);
- absolute difference, continuous metric: Welch's t-test, Welch-Satterthwaite df, sample
  variances with n - 1, t-based interval (scipy `ttest_ind(equal_var=False)`);
- relative lift: gbstats 0.8.0 `TwoSidedTTest(difference_type="relative")`, the delta method on
  its `ProportionStatistic` (variance p (1 - p)) or `SampleMeanStatistic`;
- CUPED, when every variant has its pre-period sums: gbstats' `RegressionAdjustedStatistic` with
  the theta `compute_theta` pools over control and variant; the absolute difference is then
  gbstats' absolute t-test on the adjusted statistics (the z-test and Welch have no adjusted form)
  and the relative lift its relative one. A theta of 0 (no variance in a period) means no
  adjustment, as in gbstats, and the row says `cuped: false`;
- sequential (per metric): gbstats' `SequentialTwoSidedTTest` replaces both intervals and
  p-values by always-valid ones (Waudby-Smith et al. 2023), tuning parameter 5000 by default;
- Bayesian: gbstats' `EffectBayesianABTest` with its default configuration: relative difference,
  improper flat prior, so the posterior of the lift is normal around the delta-method estimate;
  chance_to_win is P(lift > 0) (P(lift < 0) when lower is better) and risk_control / risk_variant
  the expected relative loss of shipping control / the variant, in gbstats' order;
- sample-ratio mismatch: Pearson's chi-square of users per variant against the planned split
  (scipy `chisquare`), one p-value per metric repeated on each of its rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from analytics_core.stats.distributions import chi2_sf, norm_cdf, norm_isf, norm_sf, normal_linear_loss, t_isf, t_sf
from analytics_core.stats.document import Metric, Moments, Variant

SPLIT_TOLERANCE = 1e-6
_RELATIVE = "relative lift and chance to win"  # what gbstats' relative guards take away
_OUT_OF_RANGE = "a number is beyond double precision's range"


@dataclass(frozen=True)
class Arm:
    """One arm as gbstats' tests see it: the mean they compare (CUPED-adjusted or not), its variance, its raw mean."""

    n: int
    mean: float
    variance: float  # negative rounding noise clamped to 0: gbstats treats <= 0 as no variance anyway
    unadjusted_mean: float


class CannotCompute(Exception):
    """A rule the data breaks for one number; the row carries the message in cannot_compute."""


@dataclass(frozen=True)
class Estimate:
    """A difference with its interval and p-value; None for what could not be computed."""

    point: float | None = None
    low: float | None = None
    high: float | None = None
    p_value: float | None = None


@dataclass(frozen=True)
class Bayes:
    chance_to_win: float
    risk_control: float
    risk_variant: float


def _mean(m: Moments, n: int) -> float:
    return m.sum / n if n else 0.0


def _variance(m: Moments, n: int) -> float:
    if m.binary:
        p = _mean(m, n)
        return p * (1 - p)
    return 0.0 if n <= 1 else (m.sum_squares - m.sum * (m.sum / n)) / (n - 1)


def _covariance(sum_products: float, post: Moments, pre: Moments, n: int) -> float:
    return 0.0 if n <= 1 else (sum_products - post.sum * (pre.sum / n)) / (n - 1)


def cuped_theta(a: Variant, b: Variant) -> float:
    """gbstats' compute_theta: pooled post-pre covariance over pooled pre variance, 0 when either period is flat."""
    if a.pre is None or b.pre is None:
        return 0.0
    n = a.users + b.users
    post = Moments(a.post.sum + b.post.sum, a.post.sum_squares + b.post.sum_squares, a.post.binary)
    pre = Moments(a.pre.sum + b.pre.sum, a.pre.sum_squares + b.pre.sum_squares, a.pre.binary)
    if _variance(pre, n) == 0 or _variance(post, n) == 0:
        return 0.0
    return _covariance(a.sum_products + b.sum_products, post, pre, n) / _variance(pre, n)


def arm(v: Variant, theta: float = 0.0) -> Arm:
    """gbstats' statistic of one variant: SampleMean or Proportion, RegressionAdjusted when theta != 0."""
    n, raw_mean = v.users, _mean(v.post, v.users)
    if theta == 0.0 or v.pre is None:
        return Arm(n, raw_mean, max(_variance(v.post, n), 0.0), raw_mean)
    variance = 0.0
    if n > 1:
        covariance = _covariance(v.sum_products, v.post, v.pre, n)
        variance = _variance(v.post, n) + theta * theta * _variance(v.pre, n) - 2 * theta * covariance
    return Arm(n, raw_mean - theta * _mean(v.pre, n), max(variance, 0.0), raw_mean)


def two_proportion_z(a: Variant, b: Variant, alpha: float, reasons: list[str]) -> Estimate:
    """statsmodels' proportions_ztest (pooled SE, two-sided) and Wald interval (unpooled SE) of pb - pa."""
    pa, pb = a.post.sum / a.users, b.post.sum / b.users
    diff = pb - pa
    pooled = (a.post.sum + b.post.sum) / (a.users + b.users)
    pooled_variance = pooled * (1 - pooled) * (1 / a.users + 1 / b.users)
    if pooled_variance <= 0:
        raise CannotCompute("z-test: no variance in either arm (0 % or 100 % conversion in both)")
    p_value = 2 * norm_sf(abs(diff) / math.sqrt(pooled_variance))
    wald_se = math.sqrt(pa * (1 - pa) / a.users + pb * (1 - pb) / b.users)
    if wald_se == 0:
        _note(reasons, "Wald interval: no variance in either arm (each at 0 % or 100 % conversion)")
        return Estimate(diff, None, None, p_value)
    width = norm_isf(alpha / 2) * wald_se
    return Estimate(diff, diff - width, diff + width, p_value)


def _difference(a: Arm, b: Arm, relative: bool) -> tuple[float, float]:
    """gbstats' frequentist_diff and frequentist_variance: the (relative) difference and its delta-method variance."""
    if relative:
        ma, mb = a.unadjusted_mean, b.unadjusted_mean
        return (b.mean - a.mean) / ma, b.variance / (ma * ma * b.n) + a.variance * mb * mb / (ma**4 * a.n)
    return b.mean - a.mean, b.variance / b.n + a.variance / a.n


def _gbstats_guards(a: Arm, b: Arm, what: str) -> None:
    """gbstats' refusals before any of its tests: a control mean of 0, then no variance in either arm."""
    if a.mean == 0 or a.unadjusted_mean == 0:
        raise CannotCompute(f"{what}: the control mean is 0 (gbstats declines)")
    _check_users(a, b)
    _check_variances(a, b, what, each=True)


def _in_range(point: float, variance: float, df: float = 1.0) -> None:
    """Sums near the ends of double precision overflow or underflow on the way: no number is better than a wrong one.

    The guards before have made sure the variance is positive; a 0 here has underflowed.
    """
    if not (math.isfinite(point) and math.isfinite(df) and 0 < variance < math.inf):
        raise CannotCompute(_OUT_OF_RANGE)


def _check_users(a: Arm, b: Arm) -> None:
    for name, x in (("control", a), ("variant", b)):
        if x.n < 2:
            raise CannotCompute(f"the {name} has {x.n} user: a variance needs 2")


def _check_variances(a: Arm, b: Arm, what: str, each: bool) -> None:
    """gbstats refuses when either arm has no variance (each), scipy's Welch only when both have none."""
    if a.variance <= 0 and b.variance <= 0:
        raise CannotCompute(f"{what}: no variance in either arm")
    if each and (a.variance <= 0 or b.variance <= 0):
        which = "the control" if a.variance <= 0 else "the variant"
        raise CannotCompute(f"{what}: no variance in {which} (gbstats needs both arms')")


def welch_t(a: Arm, b: Arm, alpha: float, relative: bool, gbstats_guards: bool) -> Estimate:
    """gbstats' TwoSidedTTest; absolute, on sample means, it is scipy's Welch test and interval formula for formula.

    gbstats_guards: refuse where gbstats does (a control mean of 0, no variance in either arm); without,
    refuse only where scipy has no answer (fewer than 2 users, no variance in both arms).
    """
    if relative or gbstats_guards:
        _gbstats_guards(a, b, _RELATIVE if relative else "absolute lift")
    else:
        _check_users(a, b)
        _check_variances(a, b, "absolute lift", each=False)
    point, variance = _difference(a, b, relative)
    va, vb = a.variance, b.variance
    df = (vb / b.n + va / a.n) ** 2 / (vb * vb / (b.n * b.n * (b.n - 1)) + va * va / (a.n * a.n * (a.n - 1)))
    _in_range(point, variance, df)
    se = math.sqrt(variance)
    width = t_isf(alpha / 2, df) * se
    return Estimate(point, point - width, point + width, 2 * t_sf(abs(point) / se, df))


def sequential_t(a: Arm, b: Arm, alpha: float, tuning: float, relative: bool) -> Estimate:
    """gbstats' SequentialTwoSidedTTest: the always-valid interval (eq. 9) and p-value (eq. 155), Waudby-Smith et al."""
    _gbstats_guards(a, b, _RELATIVE if relative else "absolute lift")
    point, variance = _difference(a, b, relative)
    _in_range(point, variance)
    n = a.n + b.n
    rho2 = (-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / tuning
    tr2p1 = n * rho2 + 1
    width = math.sqrt(variance * n) * math.sqrt(2 * tr2p1 * math.log(math.sqrt(tr2p1) / alpha) / (n * n * rho2))
    log_evalue = rho2 * (point * point * n / variance) / (2 * tr2p1) - 0.5 * math.log(tr2p1)
    return Estimate(point, point - width, point + width, math.exp(-log_evalue) if log_evalue > 0 else 1.0)


def bayesian(a: Arm, b: Arm, higher_is_better: bool) -> Bayes:
    """gbstats' EffectBayesianABTest, default config: relative lift, flat prior, risk as its get_risk."""
    _gbstats_guards(a, b, _RELATIVE)
    mean, variance = _difference(a, b, relative=True)
    _in_range(mean, variance)
    sigma = math.sqrt(variance)
    z = mean / sigma
    gain, loss = sigma * normal_linear_loss(-z), sigma * normal_linear_loss(z)  # E[max(lift, 0)], E[max(-lift, 0)]
    if higher_is_better:
        return Bayes(norm_cdf(z), gain, loss)
    return Bayes(norm_cdf(-z), loss, gain)


def srm_p_value(m: Metric) -> float:
    """Pearson's chi-square goodness of fit of the users per variant to the planned split (scipy chisquare)."""
    unknown = sorted(set(m.split) - set(m.variants))
    if unknown:
        raise CannotCompute(f"SRM: the split names {unknown[0]!r}, which is not a variant")
    missing = [k for k in m.variants if k not in m.split]
    if missing:
        raise CannotCompute(f"SRM: the split has no fraction for {missing[0]!r}")
    total_fraction = sum(m.split.values())
    if abs(total_fraction - 1) > SPLIT_TOLERANCE:
        raise CannotCompute(f"SRM: the split's fractions sum to {total_fraction:g}, not 1")
    total = sum(v.users for v in m.variants.values())
    if total == 0:
        raise CannotCompute("SRM: no variant has users")
    expected = {k: m.split[k] / total_fraction * total for k in m.variants}
    statistic = sum((v.users - expected[k]) ** 2 / expected[k] for k, v in m.variants.items())
    return chi2_sf(statistic, len(m.variants) - 1)


def _note(reasons: list[str], reason: str) -> None:
    if reason not in reasons:
        reasons.append(reason)

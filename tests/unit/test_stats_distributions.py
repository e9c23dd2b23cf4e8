"""analytics_core.stats.distributions against scipy 1.17 and exact references, within 1e-12 relative.

scipy is the reference wherever it is itself accurate. Where it is not, the test says so and uses an
exact value instead: Student t with df = 1 near the centre (scipy's stdtr answers 0.4999999952568
at t = -1e-8, the Cauchy cdf is 0.4999999968169), t.isf in the far tail at small df (at df = 3.98,
q = 1.3e-217 it answers a t whose sf is 1e-216), t.pdf at large df (2e-12 off at df = 1e4) and
chi2.sf at large df (up to 4e-12 off for df in the thousands). The exact references: closed forms for df = 1 and
2, the finite sums of the t cdf, pdf and chi-square sf for even df in 300-digit decimals.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import numpy as np
import pytest
from scipy import stats

from analytics_core.stats import distributions as d

REL = 1e-12
TAIL = 1e-300  # smallest value compared: below it, doubles are subnormal and lose digits of their own
rng = np.random.default_rng(20240611)
DFS = [1.5, 2.0, 2.5, 3.0, 4.7, 10.0, 29.3, 100.0, 1234.5, 1e4, 1e5, 1e6, 1e7, *(10 ** rng.uniform(0, 7, 12))]


def rel_error(ours: float, ref: float) -> float:
    return 0.0 if ours == ref else abs(ours - ref) / abs(ref)


def worst(ours: list[float], refs: np.ndarray) -> float:
    keep = np.abs(refs) >= TAIL
    return max((rel_error(o, float(r)) for o, r, k in zip(ours, refs, keep, strict=True) if k), default=0.0)


def test_normal_cdf_and_sf_match_scipy_to_the_far_tails() -> None:
    xs = np.concatenate([np.linspace(-37.5, 37.5, 1501), rng.normal(0, 4, 300)])
    assert worst([d.norm_cdf(float(x)) for x in xs], stats.norm.cdf(xs)) <= REL
    assert worst([d.norm_sf(float(x)) for x in xs], stats.norm.sf(xs)) <= REL
    assert worst([d.norm_pdf(float(x)) for x in xs], stats.norm.pdf(xs)) <= REL


def test_normal_quantile_is_full_precision_in_both_tails() -> None:
    ps = np.concatenate([10 ** np.linspace(-300, math.log10(0.5), 400), rng.uniform(0, 1, 400)])
    assert worst([d.norm_ppf(float(p)) for p in ps], stats.norm.ppf(ps)) <= REL
    assert worst([d.norm_isf(float(p)) for p in ps], stats.norm.isf(ps)) <= REL
    assert d.norm_ppf(0.5) == 0.0
    assert d.norm_ppf(0.0) == -math.inf and d.norm_ppf(1.0) == math.inf


def test_t_sf_and_cdf_match_scipy_for_real_df_from_1_to_1e7() -> None:
    ts = np.concatenate([np.linspace(-38, 38, 153), np.geomspace(1e-10, 1e3, 40), -np.geomspace(1e-10, 1e3, 40)])
    for df in DFS:
        assert worst([d.t_sf(float(t), df) for t in ts], stats.t.sf(ts, df)) <= REL, df
        assert worst([d.t_cdf(float(t), df) for t in ts], stats.t.cdf(ts, df)) <= REL, df


def test_t_sf_in_the_power_law_tail_of_small_df() -> None:
    ts = np.geomspace(10, 1e150, 60)
    for df in (1.3, 2.0, 3.98, 7.5, 30.0):
        assert worst([d.t_sf(float(t), df) for t in ts], stats.t.sf(ts, df)) <= REL, df


def test_t_with_one_and_two_df_against_their_closed_forms() -> None:
    ts = [*(float(t) for t in np.geomspace(1e-12, 1e12, 97)), 0.0]
    for t in ts:
        cauchy = 0.5 - math.atan(t) / math.pi if t < 1 else math.atan(1 / t) / math.pi  # P(T > t), df = 1
        assert rel_error(d.t_sf(t, 1.0), cauchy) <= REL, t
        assert rel_error(d.t_cdf(-t, 1.0), cauchy) <= REL, t
        two = 0.5 - t / (2 * math.sqrt(2 + t * t)) if t < 1 else 1 / (math.sqrt(2 + t * t) * (math.sqrt(2 + t * t) + t))
        assert rel_error(d.t_sf(t, 2.0), two) <= REL, t
    for q in [*(float(q) for q in np.geomspace(1e-300, 0.5, 120)), 0.5 - 1e-12, 0.25, 0.3]:
        cot = 1 / math.tan(math.pi * q) if q < 0.25 else math.tan(math.pi * (0.5 - q))
        assert rel_error(d.t_isf(q, 1.0), cot) <= REL, q
        if q > 1e-150:
            assert rel_error(d.t_isf(q, 2.0), (1 - 2 * q) / math.sqrt(2 * q * (1 - q))) <= REL, q


def t_sf_even_df(t: float, df: int) -> float:
    """P(T > t), t >= 0, for even df: (1 - sin(theta) sum_k c_k cos^2k(theta)) / 2, in 320-digit decimals."""
    with localcontext(prec=320):
        tt, n = Decimal(t) ** 2, Decimal(df)
        sin, cos2 = Decimal(t) / (n + tt).sqrt(), n / (n + tt)
        term, total = Decimal(1), Decimal(1)
        for k in range(1, df // 2):
            term *= cos2 * (2 * k - 1) / (2 * k)
            total += term
        return float((1 - sin * total) / 2)


def test_t_sf_for_even_df_against_the_exact_finite_sum() -> None:
    for df in (2, 4, 10, 30, 100, 1000):
        for t in (1e-6, 0.1, 1.0, 1.96, 2.5, 5.0, 12.0, 30.0):
            ref = t_sf_even_df(t, df)
            if ref >= TAIL:
                assert rel_error(d.t_sf(t, float(df)), ref) <= REL, (t, df)


def t_pdf_even_df(t: float, df: int) -> float:
    """The t density for even df, with B(n, 1/2) = (n-1)! 4^n n! / (2n)! exact."""
    n = df // 2
    with localcontext(prec=60):
        beta = Decimal(math.factorial(n - 1) * 4**n * math.factorial(n)) / Decimal(math.factorial(2 * n))
        nu = Decimal(df)
        return float((-(nu + 1) / 2 * (1 + Decimal(t) ** 2 / nu).ln()).exp() / (nu.sqrt() * beta))


def test_t_pdf_against_the_exact_beta_function() -> None:
    for df in (2, 10, 100, 2000, 20000):
        for t in (0.0, 0.5, 3.0, 21.0, -35.0):
            ref = t_pdf_even_df(t, df)
            if ref >= TAIL:
                assert rel_error(d.t_pdf(t, float(df)), ref) <= REL, (t, df)


def quantile_error(t: float, q: float, df: float) -> float:
    """How far t is from the exact P(T > t) = q quantile, relative, as scipy's sf and pdf see it (first order).

    That is |sf(t) / q - 1| over the condition number t pdf(t) / sf(t), taken in logs: far out the pdf underflows.
    """
    condition = math.exp(math.log(abs(t)) + float(stats.t.logpdf(t, df)) - float(stats.t.logsf(t, df)))
    return abs(float(stats.t.sf(t, df)) / q - 1) / condition


def test_t_quantiles_solve_scipys_sf_and_match_scipys_quantiles_where_those_are_consistent() -> None:
    qs = np.concatenate([10 ** np.linspace(-300, math.log10(0.4999), 60), rng.uniform(0.001, 0.4999, 20)])
    compared = 0
    for df in (1.0124, *DFS):
        for q in (float(q) for q in qs):
            ours = d.t_isf(q, df)
            if float(stats.t.sf(ours, df)) >= TAIL:
                assert quantile_error(ours, q, df) <= REL, (q, df)
            ref = float(stats.t.isf(q, df))
            if quantile_error(ref, q, df) <= 1e-13:
                assert rel_error(ours, ref) <= REL, (q, df)
                compared += 1
            assert d.t_ppf(q, df) == -ours
    assert compared > 1500


def test_t_quantiles_at_the_intervals_usual_levels() -> None:
    for df in DFS:
        for p in (0.8, 0.9, 0.95, 0.975, 0.99, 0.995, 0.9995):
            assert rel_error(d.t_ppf(p, df), float(stats.t.ppf(p, df))) <= REL, (p, df)


def test_t_quantile_near_the_centre_keeps_relative_accuracy() -> None:
    for df in (2.0, 3.0, 50.0, 1e6):
        for offset in (1e-15, 1e-12, 1e-9, 1e-6):
            t = d.t_ppf(0.5 + offset, df)
            exact_offset = (0.5 + offset) - 0.5
            assert rel_error(t, exact_offset / d.t_pdf(0.0, df)) <= 1e-9, (df, offset)  # t^3 terms below 1e-9


def test_t_edges() -> None:
    assert d.t_sf(0.0, 3.0) == 0.5 and d.t_isf(0.5, 3.0) == 0.0
    assert d.t_sf(1.5, math.inf) == d.norm_sf(1.5)
    with pytest.raises(ValueError, match="degrees of freedom"):
        d.t_sf(1.0, 0.0)
    with pytest.raises(ValueError, match="probability"):
        d.t_isf(1.5, 3.0)


def test_chi2_sf_matches_scipy_for_integer_and_real_df() -> None:
    for df in (1, 2, 3, 4, 5, 7, 10, 0.7, 1.5, 3.3, 20.5, 50, 99.5):
        xs = np.concatenate([np.geomspace(1e-6, 1500, 120), [df, df + 1, 1.01 * df]])
        assert worst([d.chi2_sf(float(x), float(df)) for x in xs], stats.chi2.sf(xs, df)) <= REL, df
    assert d.chi2_sf(0.0, 3.0) == 1.0 and d.chi2_sf(math.inf, 3.0) == 0.0


def chi2_sf_even_df(x: float, df: int) -> float:
    """P(X > x) for even df: the Poisson sum exp(-x/2) sum_{k < df/2} (x/2)^k / k!, in 320-digit decimals."""
    with localcontext(prec=60):
        half = Decimal(x) / 2
        term, total = Decimal(1), Decimal(0)
        for k in range(df // 2):
            total += term
            term *= half / (k + 1)
        return float((-half).exp() * total)


def test_chi2_sf_for_large_even_df_against_the_exact_poisson_sum() -> None:
    for df in (2, 10, 200, 1000, 5000):
        for x in (0.5 * df, df - 1.0, float(df), df + 3.0, 1.75 * df, 3.0 * df + 200):
            ref = chi2_sf_even_df(x, df)
            if ref >= TAIL:
                assert rel_error(d.chi2_sf(x, float(df)), ref) <= REL, (x, df)


def test_normal_linear_loss_against_its_two_forms() -> None:
    for z in np.linspace(-8, 10, 300):  # the direct form cancels a factor ~z^2: its own error is 1e-12 at z = 8
        z = float(z)
        direct = float(stats.norm.pdf(z) - z * stats.norm.sf(z))
        assert rel_error(d.normal_linear_loss(z), direct) <= (REL if z <= 5 else 1e-11), z
    for z in np.linspace(10, 37, 60):  # phi(z) (1/z^2 - 3/z^4 + 15/z^6 - ...): converges fast out here
        z = float(z)
        total, term, k = 0.0, 1 / z**2, 1
        while abs(term) > 1e-18 * abs(total or term):
            total, term, k = total + term, -term * (2 * k + 1) / z**2, k + 1
        assert rel_error(d.normal_linear_loss(z), d.norm_pdf(z) * total) <= REL, z

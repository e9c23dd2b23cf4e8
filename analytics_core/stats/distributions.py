"""The normal, Student t and chi-square functions the experiment statistics need, in the standard library alone.

The statistics run inside DuckDB (a Python function dbt calls), in the `analytics` command and in
the API; scipy would be the only reason for any of them to carry it, and these few functions are
all they use. tests/unit/test_stats_distributions.py holds them to scipy's values within 1e-12
relative: df from 1 to 1e7, tails down to 1e-300.

- Normal: cdf and sf from math.erfc, so both tails keep their relative accuracy; the quantile is
  Wichura's AS241 (PPND16, about 1e-16 relative).
- Student t, any real df > 0 (Welch-Satterthwaite df are not integers): sf(t) = I_x(df/2, 1/2) / 2
  with x = df / (df + t^2), the regularized incomplete beta by its continued fraction (modified
  Lentz, in the form of Boost's ibeta_fraction2) on whichever of I_x(a, b) and 1 - I_{1-x}(b, a)
  converges; with b = 1/2 that takes at most 63 terms for df from 1 to 1e9. x and 1 - x are both
  formed from t^2 / df, never one from the other: at df = 1e7 and t = 2, 1 - x taken from a
  rounded x keeps ten of its sixteen digits. The prefactor x^a (1-x)^b / B(a, b) is taken in logs,
  log B from the Stirling series above 10: lgamma(a) - lgamma(a + 1/2) with math.lgamma cancels
  eight digits at df = 1e7.
- Student t quantile: Hill's start (CACM Algorithm 396, 1970), then Halley steps on log sf in the
  tail, or on P(0 < T < t) near the centre where sf is too close to 1/2 to tell t apart, each step
  kept inside a shrinking bracket by bisection.
- Chi-square sf, any real df: the regularized upper incomplete gamma Q(df/2, x/2), by its series
  below x = a + 1 and its continued fraction above, the prefactor through log1p(u) - u for large a.
- normal_linear_loss(z) = E[max(Z - z, 0)], the Bayesian risk's building block, by a continued
  fraction in the right tail where phi(z) - z (1 - Phi(z)) cancels.
"""

from __future__ import annotations

import math
from collections.abc import Callable

_EPS = 2.220446049250313e-16
_TINY = 1e-300
_LN_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_SQRT_HALF = math.sqrt(0.5)
_MAX_TERMS = 100_000  # far above what any series or fraction here needs; a guard, never reached in tests


# AS241's coefficients, highest power first: |p - 1/2| <= 0.425, then sqrt(-log(tail)) <= 5, then beyond.
_AS241_CENTRE_NUM = (
    2.5090809287301226727e3, 3.3430575583588128105e4, 6.7265770927008700853e4, 4.5921953931549871457e4,
    1.3731693765509461125e4, 1.9715909503065514427e3, 1.3314166789178437745e2, 3.3871328727963666080e0,
)  # fmt: skip
_AS241_CENTRE_DEN = (
    5.2264952788528545610e3, 2.8729085735721942674e4, 3.9307895800092710610e4, 2.1213794301586595867e4,
    5.3941960214247511077e3, 6.8718700749205790830e2, 4.2313330701600911252e1, 1.0,
)  # fmt: skip
_AS241_NEAR_NUM = (
    7.74545014278341407640e-4, 2.27238449892691845833e-2, 2.41780725177450611770e-1, 1.27045825245236838258e0,
    3.64784832476320460504e0, 5.76949722146069140550e0, 4.63033784615654529590e0, 1.42343711074968357734e0,
)  # fmt: skip
_AS241_NEAR_DEN = (
    1.05075007164441684324e-9, 5.47593808499534494600e-4, 1.51986665636164571966e-2, 1.48103976427480074590e-1,
    6.89767334985100004550e-1, 1.67638483018380384940e0, 2.05319162663775882187e0, 1.0,
)  # fmt: skip
_AS241_FAR_NUM = (
    2.01033439929228813265e-7, 2.71155556874348757815e-5, 1.24266094738807843860e-3, 2.65321895265761230930e-2,
    2.96560571828504891230e-1, 1.78482653991729133580e0, 5.46378491116411436990e0, 6.65790464350110377720e0,
)  # fmt: skip
_AS241_FAR_DEN = (
    2.04426310338993978564e-15, 1.42151175831644588870e-7, 1.84631831751005468180e-5, 7.86869131145613259100e-4,
    1.48753612908506148525e-2, 1.36929880922735805310e-1, 5.99832206555887937690e-1, 1.0,
)  # fmt: skip


def _horner(coefficients: tuple[float, ...], x: float) -> float:
    total = 0.0
    for c in coefficients:
        total = total * x + c
    return total


# --- normal --------------------------------------------------------------------------------------


def norm_pdf(x: float) -> float:
    return math.exp(-0.5 * x * x - _LN_SQRT_2PI)


def norm_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x * _SQRT_HALF)


def norm_sf(x: float) -> float:
    return 0.5 * math.erfc(x * _SQRT_HALF)


def norm_ppf(p: float) -> float:
    """The standard normal quantile, Wichura's AS241 (PPND16)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"a probability must be in [0, 1], not {p}")
    if p in (0.0, 1.0):
        return math.copysign(math.inf, p - 0.5)
    q = p - 0.5
    if abs(q) <= 0.425:
        r = 0.180625 - q * q
        return q * _horner(_AS241_CENTRE_NUM, r) / _horner(_AS241_CENTRE_DEN, r)
    r = math.sqrt(-math.log(p if q < 0.0 else 1.0 - p))
    if r <= 5.0:
        x = _horner(_AS241_NEAR_NUM, r - 1.6) / _horner(_AS241_NEAR_DEN, r - 1.6)
    else:
        x = _horner(_AS241_FAR_NUM, r - 5.0) / _horner(_AS241_FAR_DEN, r - 5.0)
    return -x if q < 0.0 else x


def norm_isf(q: float) -> float:
    """The z with P(Z > z) = q, exact in the upper tail (no 1 - q)."""
    return -norm_ppf(q)


def normal_linear_loss(z: float) -> float:
    """E[max(Z - z, 0)] = phi(z) - z (1 - Phi(z)) for a standard normal Z, to full relative accuracy."""
    if z <= 3.0:  # cancels at most a factor 11 here
        return norm_pdf(z) - z * norm_sf(z)
    # phi(z) - z Q(z) = erfc(x) r / sqrt(2) with x = z / sqrt(2) and r = i erfc(x) / erfc(x)
    # = 1 / (2x + 4 / (2x + 6 / (2x + ...))), the repeated-integral recurrence read as a fraction.
    x = z * _SQRT_HALF
    r = _lentz(lambda k: 1.0 if k == 1 else 2.0 * k, lambda k: 2.0 * x)
    return math.erfc(x) * r * _SQRT_HALF


# --- helpers: continued fractions, log gamma and log beta -----------------------------------------


def _lentz(a_k: Callable[[int], float], b_k: Callable[[int], float]) -> float:
    """a1 / (b1 + a2 / (b2 + ...)) by the modified Lentz method; a_k and b_k give the k-th terms, k >= 1."""
    f = c = _TINY
    d = 0.0
    for k in range(1, _MAX_TERMS):
        d = b_k(k) + a_k(k) * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = b_k(k) + a_k(k) / c
        c = c if abs(c) > _TINY else _TINY
        delta = c * d
        f *= delta
        if abs(delta - 1.0) <= _EPS:
            break
    return f


def _stirling_tail(x: float) -> float:
    """lgamma(x) - ((x - 1/2) ln x - x + ln sqrt(2 pi)), the Stirling series' remainder, for x >= 10."""
    r = 1.0 / x
    r2 = r * r
    return r * (1 / 12 + r2 * (-1 / 360 + r2 * (1 / 1260 + r2 * (-1 / 1680 + r2 * (1 / 1188 + r2 * (
        -691 / 360360 + r2 * (1 / 156 + r2 * (-3617 / 122400))))))))  # fmt: skip


def _lgamma_ratio(a: float, b: float) -> float:
    """lgamma(a) - lgamma(a + b) for a >= 10, without the cancellation of the two large lgammas."""
    return -(a - 0.5) * math.log1p(b / a) - b * math.log(a + b) + b + _stirling_tail(a) - _stirling_tail(a + b)


def _log_beta(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    if a < 10.0:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    if b < 10.0:
        return math.lgamma(b) + _lgamma_ratio(a, b)
    return (
        _LN_SQRT_2PI
        - 0.5 * math.log(b)
        - b * math.log1p(a / b)
        - (a - 0.5) * math.log1p(b / a)
        + _stirling_tail(a)
        + _stirling_tail(b)
        - _stirling_tail(a + b)
    )


def _log1pmx(u: float) -> float:
    """log1p(u) - u, accurate near u = 0: log1p(u) = 2 atanh(s) with s = u / (2 + u)."""
    if abs(u) >= 0.5:
        return math.log1p(u) - u
    s = u / (2.0 + u)
    s2 = s * s
    total, power, k = -s * u, 2.0 * s * s2, 3
    while True:
        term = power / k
        total += term
        if abs(term) <= _EPS * abs(total):
            return total
        power *= s2
        k += 2


def _ibeta(a: float, b: float, x: float, y: float, ln_x: float, ln_y: float) -> tuple[float, float]:
    """(I_x(a, b), 1 - I_x(a, b)) with y = 1 - x, both given exactly; the side below the switch point is computed."""
    if ln_x == -math.inf:
        return 0.0, 1.0
    if ln_y == -math.inf:
        return 1.0, 0.0
    front = math.exp(a * ln_x + b * ln_y - _log_beta(a, b))
    if y > (b + 1.0) / (a + b + 2.0):  # x below the switch point: the fraction in x converges
        p = front / _beta_fraction(a, b, x, y)
        return p, 1.0 - p
    q = front / _beta_fraction(b, a, y, x)
    return 1.0 - q, q


def _beta_fraction(a: float, b: float, x: float, y: float) -> float:
    """The continued fraction F with I_x(a, b) = x^a y^b / (B(a, b) F), in the form Boost's ibeta_fraction2 uses.

    Its terms take x and y = 1 - x separately (a y - b x + 1, never 1 - c x), so at df = 1e7, where
    x is within 1e-6 of 1, nothing cancels; Numerical Recipes' betacf loses nine digits there.
    """
    base = a * y - b * x + 1.0

    def numerator(m: int) -> float:
        return (a + m - 1) * (a + b + m - 1) * m * (b - m) * x * x / ((a + 2 * m - 1) ** 2)

    def denominator(m: int) -> float:
        return m + m * (b - m) * x / (a + 2 * m - 1) + (a + m) * (base + m * (2.0 - x)) / (a + 2 * m + 1)

    return a * base / (a + 1.0) + _lentz(numerator, denominator)


# --- Student t -------------------------------------------------------------------------------------


def _check_df(df: float) -> None:
    if not df > 0.0:
        raise ValueError(f"degrees of freedom must be > 0, not {df}")


def _t_split(t: float, df: float) -> tuple[float, float, float, float]:
    """x = df / (df + t^2), y = t^2 / (df + t^2) and their logs, each from u = t^2 / df."""
    at = abs(t)
    u = at * at / df if at < 1e150 else math.inf
    if u > 1e300:
        ln_x = -2.0 * (math.log(at) - 0.5 * math.log(df))
        x = math.exp(ln_x)
        return x, 1.0, ln_x, -x
    return 1.0 / (1.0 + u), u / (1.0 + u), -math.log1p(u), -math.log1p(1.0 / u) if u > 0.0 else -math.inf


def _t_halves(t: float, df: float) -> tuple[float, float]:
    """(P(T > |t|), P(0 < T < |t|)), each to full relative accuracy."""
    if t == 0.0:
        return 0.5, 0.0
    p, q = _ibeta(0.5 * df, 0.5, *_t_split(t, df))
    return 0.5 * p, 0.5 * q


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with df (real, > 0) degrees of freedom."""
    _check_df(df)
    if math.isinf(df):
        return norm_sf(t)
    tail, centre = _t_halves(t, df)
    return tail if t >= 0.0 else 0.5 + centre


def t_cdf(t: float, df: float) -> float:
    return t_sf(-t, df)


def t_pdf(t: float, df: float) -> float:
    _check_df(df)
    if math.isinf(df):
        return norm_pdf(t)
    return math.exp(_t_log_pdf(t, df))


def _t_log_pdf(t: float, df: float) -> float:
    return 0.5 * (df + 1.0) * _t_split(t, df)[2] - 0.5 * math.log(df) - _log_beta(0.5 * df, 0.5)


def t_isf(q: float, df: float) -> float:
    """The t with P(T > t) = q."""
    _check_df(df)
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"a probability must be in [0, 1], not {q}")
    if q > 0.5:
        return -t_isf(1.0 - q, df)  # 1 - q is exact for q in [0.5, 1]
    if q in (0.0, 0.5):
        return math.inf if q == 0.0 else 0.0
    if math.isinf(df):
        return norm_isf(q)
    return _t_solve(q, df)


def t_ppf(p: float, df: float) -> float:
    """The t with P(T <= t) = p."""
    return -t_isf(p, df)


def _t_start(q: float, df: float) -> float:
    """Hill's (1970) approximation of the upper quantile, q <= 1/2; a rough tail or centre guess for df < 1."""
    if df == 1.0:
        return 1.0 / math.tan(math.pi * q)
    if df == 2.0:
        return (1.0 - 2.0 * q) / math.sqrt(2.0 * q * (1.0 - q))
    log_tail_guess = 0.5 * math.log(df) - (math.log(q * df) + _log_beta(0.5 * df, 0.5)) / df  # sf ~ c t^-df
    tail_guess = math.exp(min(log_tail_guess, 700.0))
    if df < 1.0:
        return (0.5 - q) / t_pdf(0.0, df) if q > 0.25 else tail_guess
    if df > 1e20:
        return norm_isf(q)
    a = 1.0 / (df - 0.5)
    b = 48.0 / (a * a)
    c = ((20700.0 * a / b - 98.0) * a - 16.0) * a + 96.36
    d = ((94.5 / (b + c) - 3.0) / b + 1.0) * math.sqrt(a * math.pi / 2.0) * df
    y = (d * 2.0 * q) ** (2.0 / df)
    if y < 1e-250:
        return tail_guess
    if y > 0.05 + a:
        x = -norm_isf(q)
        y = x * x
        if df < 5.0:
            c += 0.3 * (df - 4.5) * (x + 0.6)
        c += (((0.05 * d * x - 5.0) * x - 7.0) * x - 2.0) * x + b
        y = (((((0.4 * y + 6.3) * y + 36.0) * y + 94.5) / c - y - 3.0) / b + 1.0) * x
        y = math.expm1(a * y * y)
    else:
        y = ((1.0 / (((df + 6.0) / (df * y) - 0.089 * d - 0.822) * (df + 2.0) * 3.0) + 0.5 / (df + 4.0)) * y - 1.0) * (
            df + 1.0
        ) / (df + 2.0) + 1.0 / y
    return math.sqrt(df * y)


def _t_solve(q: float, df: float) -> float:
    """The t > 0 with P(T > t) = q < 1/2: Halley steps on a residual that rises with t, inside a bracket.

    In the tail the residual is log q - log sf(t); from q = 1/4 up it is P(0 < T < t) - (1/2 - q)
    (1/2 - q is exact there), so a t near 0 is found to full relative accuracy too.
    """
    centre = q > 0.25
    target = 0.5 - q if centre else math.log(q)
    lo, hi = 0.0, math.inf
    t = _t_start(q, df)
    if not (math.isfinite(t) and t > 0.0):
        t = 1.0
    for _ in range(200):
        tail, middle = _t_halves(t, df)
        log_density = _t_log_pdf(t, df)
        slope = -(df + 1.0) * t / (df + t * t)  # the density's derivative over the density
        if centre:
            r, r1 = middle - target, math.exp(log_density)
            r2 = r1 * slope
        elif tail == 0.0:
            r, r1, r2 = math.inf, 0.0, 0.0
        else:  # d/dt of -log sf is pdf / sf, taken in logs: far out both underflow, their ratio does not
            r, r1 = target - math.log(tail), math.exp(log_density - math.log(tail))
            r2 = r1 * slope + r1 * r1
        if r == 0.0:
            return t
        if r > 0.0:
            hi = t
        else:
            lo = t
        step = r / (r1 - 0.5 * r * r2 / r1) if r1 > 0.0 else math.nan
        new = t - step
        if abs(step) <= 4.0 * _EPS * t:
            return new
        if not (math.isfinite(new) and lo < new < hi):
            if math.isinf(hi):
                new = 2.0 * t
            elif lo > 0.0 and hi > 4.0 * lo:
                new = math.sqrt(lo * hi)
            else:
                new = 0.5 * (lo + hi)
        if hi - lo <= 4.0 * _EPS * hi < math.inf:
            return new
        t = new
    return t


# --- chi-square ------------------------------------------------------------------------------------


def chi2_sf(x: float, df: float) -> float:
    """P(X > x) for a chi-square with df (real, > 0) degrees of freedom."""
    _check_df(df)
    if x <= 0.0:
        return 1.0
    if math.isinf(x):
        return 0.0
    return _gamma_q(0.5 * df, 0.5 * x)


def _gamma_q(a: float, x: float) -> float:
    """The regularized upper incomplete gamma Q(a, x) = Gamma(a, x) / Gamma(a)."""
    if a < 10.0:
        log_front = a * math.log(x) - x - math.lgamma(a)
    else:  # a ln x - x - lgamma(a), with the large terms cancelled analytically
        log_front = a * _log1pmx((x - a) / a) + 0.5 * math.log(a / (2.0 * math.pi)) - _stirling_tail(a)
    if x < a + 1.0:
        term = total = 1.0 / a
        n = a
        for _ in range(_MAX_TERMS):
            n += 1.0
            term *= x / n
            total += term
            if term <= _EPS * total:
                break
        return 1.0 - total * math.exp(log_front)
    # Q = front / (x + 1 - a - 1 (1 - a) / (x + 3 - a - 2 (2 - a) / (x + 5 - a - ...)))
    fraction = _lentz(lambda k: 1.0 if k == 1 else -(k - 1) * (k - 1 - a), lambda k: x + 2.0 * k - 1.0 - a)
    return math.exp(log_front) * fraction

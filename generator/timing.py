"""When things happen: the daily traffic curve, gaps inside sessions, network latency, late delivery."""

from __future__ import annotations

import numpy as np

from generator.config import HOUR_US, SECOND_US

# Share of the day's traffic by UTC hour (mean 1): a trough around 04:00, a peak in the European evening.
HOUR_WEIGHTS = 1.0 + 0.5 * np.sin(2 * np.pi * (np.arange(24) - 10) / 24)
GAP_MIN_US, GAP_MEAN_US = 2 * SECOND_US, 25 * SECOND_US  # between two events of a session: min + exponential
# Receipt latency stays below GAP_MIN, so a session's events are received in the order they happened.
LATENCY_MIN_US, LATENCY_MEAN_US, LATENCY_MAX_US = 30_000, 300_000, 1_500_000
LATE_LAG_MIN_US, LATE_LAG_MEAN_US, LATE_LAG_MAX_US = HOUR_US, 3 * HOUR_US, 20 * HOUR_US  # min + exponential, capped


def _hour_segments(w0: int, w1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    hours = np.arange(w0 // HOUR_US, (w1 - 1) // HOUR_US + 1)
    starts, ends = np.maximum(hours * HOUR_US, w0), np.minimum((hours + 1) * HOUR_US, w1)
    return starts, ends, HOUR_WEIGHTS[hours % 24]


def window_weight(w0: int, w1: int, diurnal: bool) -> float:
    """Microseconds of the window weighted by HOUR_WEIGHTS: expected arrivals = rate per µs x this."""
    if not diurnal:
        return float(w1 - w0)
    starts, ends, weights = _hour_segments(w0, w1)
    return float(((ends - starts) * weights).sum())


def arrival_times(rng: np.random.Generator, w0: int, w1: int, n: int, diurnal: bool) -> np.ndarray:
    """n times in [w0, w1), following the daily curve when `diurnal`."""
    if not diurnal:
        return w0 + (rng.random(n) * (w1 - w0)).astype(np.int64)
    starts, ends, weights = _hour_segments(w0, w1)
    cdf = np.cumsum((ends - starts) * weights)
    seg = np.minimum(np.searchsorted(cdf / cdf[-1], rng.random(n), side="right"), len(cdf) - 1)
    return starts[seg] + (rng.random(n) * (ends - starts)[seg]).astype(np.int64)


def session_layout(
    rng: np.random.Generator, count: np.ndarray, extra: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Session and position of each event, its offset from the session start, and each session's length.

    Gaps are GAP_MIN plus an exponential part; `extra` fixes each session's total exponential part
    (the gaps are rescaled to it, which keeps them exponential-shaped).
    """
    sess = np.repeat(np.arange(len(count)), count)
    first = np.cumsum(count) - count
    pos = np.arange(len(sess)) - first[sess]
    spread = rng.exponential(GAP_MEAN_US, len(sess))
    spread[first] = 0.0
    if extra is not None:
        totals = np.bincount(sess, weights=spread, minlength=len(count))
        spread *= (extra / np.where(totals > 0, totals, 1.0))[sess]
    gaps = np.where(pos > 0, GAP_MIN_US + spread.astype(np.int64), 0)
    elapsed = np.cumsum(gaps)
    offset = elapsed - elapsed[first][sess]
    return sess, pos, offset, offset[first + count - 1] if len(count) else np.zeros(0, dtype=np.int64)


def latencies(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.minimum(LATENCY_MIN_US + rng.exponential(LATENCY_MEAN_US, n), LATENCY_MAX_US).astype(np.int64)

"""The accuracy rollup unique counts promise (docs/ROLLUPS.md, "Unique users"), as tests check it."""

from __future__ import annotations

from analytics_core import sketches

DENSE_RELATIVE_ERROR = 0.01  # 2.5 standard errors of a dense sketch (0.41 %)


def unique_count_ok(got: float | None, exact: float) -> bool:
    """Exact while the set holds at most 8,192 users (a sparse sketch), within 1 % above."""
    if exact <= sketches.EXACT_UP_TO:
        return got == exact
    return got is not None and abs(got - exact) <= DENSE_RELATIVE_ERROR * exact

"""Unique-user sketches of the DuckDB rollups: HyperLogLog registers stored as `index * 64 + rank`.

The dbt macros in dbt_project/macros/sketches.sql build them; this module merges and estimates
them in Python (the query API, tests). The estimator is Ertl's improved raw estimator (2017),
accurate over the whole range without bias tables.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

PRECISION = 14  # dbt var hll_precision; 2^14 registers, standard error 1.04 / sqrt(2^14) = 0.81 %
REGISTERS = 1 << PRECISION
STANDARD_ERROR = 1.04 / math.sqrt(REGISTERS)
ALPHA_INF = 1 / (2 * math.log(2))


def merge(sketches: Iterable[Iterable[int] | None]) -> list[int]:
    """Union of sketches: the per-register maximum rank, in register order."""
    best: dict[int, int] = {}
    for sketch in sketches:
        for packed in sketch or ():
            index, rank = divmod(packed, 64)
            if rank > best.get(index, 0):
                best[index] = rank
    return [index * 64 + rank for index, rank in sorted(best.items())]


def sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    total, power, weight = x, x, 1.0
    while True:
        power *= power
        term = power * weight
        if term == 0.0 or total + term == total:
            return total
        total += term
        weight *= 2


def estimate(sketch: Iterable[int] | None, precision: int = PRECISION) -> float:
    """Estimated number of distinct users in a sketch (0 for an empty or missing one)."""
    registers = list(sketch or ())
    if not registers:
        return 0.0
    m = 1 << precision
    zeros = m - len(registers)
    total = m * sigma(zeros / m) + sum(2.0 ** -(packed % 64) for packed in registers)
    return ALPHA_INF * m * m / total

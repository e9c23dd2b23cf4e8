"""The shared HLL++-style sketch (analytics_core/hll.py): its error, exactness below SPARSE_MAX, and speeds.

No Kafka, Redis or lake: numpy and an in-process DuckDB only.

Error: each seed grows one set of distinct hashes (random uint64 from numpy, or DuckDB's hash of
sequential string keys "b<seed>:<i>"), merging chunks into a sketch and estimating it at every
log-spaced cardinality from 10^4 to 10^7 (8 per decade); the relative errors above SPARSE_MAX over
all seeds and points give the p50, p95 and max. Exactness: sketches of 1..8192 distinct mixed string
keys (log-spaced sizes, several seeds) must count them exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analytics_core import hll
from analytics_core.settings import Settings
from bench.harness import Record, Scale, record

SEEDS = {"small": 100, "large": 400}  # random-hash runs to 10^7
KEY_SEEDS = {"small": 5, "large": 20}  # string-key runs through DuckDB's hash, to 10^7
EXACT_SEEDS = {"small": 5, "large": 20}
TOP = 10**7
PER_DECADE = 8
REPEATS = 5  # timings: best of this many passes (2 shared cores)
_U64 = np.iinfo(np.uint64).max


def checkpoints(lo: float = 1e4, hi: float = TOP) -> np.ndarray:
    decades = np.log10(hi) - np.log10(lo)
    points = np.logspace(np.log10(lo), np.log10(hi), int(decades * PER_DECADE) + 1)
    return np.unique(np.round(points).astype(np.int64))


def grow(chunks: list[np.ndarray], points: np.ndarray) -> np.ndarray:
    """Relative errors of the sketch of the first points[i] hashes, built by merging chunk i into chunk i-1's."""
    sketch = hll.Sketch.empty()
    errors = np.empty(len(points))
    for i, (chunk, n) in enumerate(zip(chunks, points, strict=True)):
        sketch = sketch | hll.Sketch.from_hashes(chunk)
        errors[i] = sketch.estimate() / n - 1
    return errors


def random_run(seed: int, points: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = np.diff(points, prepend=0)
    return grow([rng.integers(0, _U64, size=int(s), dtype=np.uint64, endpoint=True) for s in steps], points)


def sequential_keys(prefix: str, n: int) -> pa.Array:
    numbers = pa.array(np.arange(n, dtype=np.int64)).cast(pa.string())
    return pc.binary_join_element_wise(pa.scalar(prefix), numbers, "")


def key_run(seed: int, points: np.ndarray) -> np.ndarray:
    h = hll.hash_keys(sequential_keys(f"b{seed}:", int(points[-1])))
    starts = np.r_[0, points[:-1]]
    return grow([h[a:b] for a, b in zip(starts, points, strict=True)], points)


def exact_fraction(seeds: int) -> tuple[float, int]:
    """Share of (seed, size) trials of 1..SPARSE_MAX distinct string keys counted exactly, and the trial count."""
    sizes = np.unique(np.round(np.logspace(0, np.log10(hll.SPARSE_MAX), 40)).astype(np.int64))
    exact = trials = 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        suffix = [f"-{'é' * int(k)}" if k % 3 else "🙂" for k in rng.integers(0, 12, size=hll.SPARSE_MAX)]
        base = pc.binary_join_element_wise(sequential_keys(f"e{seed}:", hll.SPARSE_MAX), pa.array(suffix), "")
        keys = base.take(pa.array(rng.permutation(hll.SPARSE_MAX)))
        for n in sizes:
            part = keys.slice(0, int(n))
            repeated = pa.concat_arrays([part, part.take(pa.array(rng.integers(0, n, size=n)))])
            exact += int(hll.Sketch.from_keys(repeated).estimate() == n)
            trials += 1
    return exact / trials, trials


def best_seconds(fn: Callable[[], Any], repeats: int = REPEATS) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def decade_table(cards: np.ndarray, errs: np.ndarray) -> list[str]:
    lines = ["  decade        points   p50 %   p95 %   max %"]
    for lo in range(4, 7):
        sel = (cards >= 10**lo) & ((cards < 10 ** (lo + 1)) | (lo == 6))
        e = np.abs(errs[sel]) * 100
        lines.append(
            f"  1e{lo}..1e{lo + 1}  {sel.sum():8d}  {np.median(e):6.3f}  {np.quantile(e, 0.95):6.3f}  {e.max():6.3f}"
        )
    return lines


def run(settings: Settings, scale: Scale) -> list[Record]:
    """hll_error_p95 (target <= 1 %), hll_exact_below_sparse (target 1.0), hash, build, merge and estimate speeds."""
    points = checkpoints()
    random_errs = np.concatenate([random_run(seed, points) for seed in range(SEEDS[scale])])
    key_errs = np.concatenate([key_run(seed, points) for seed in range(KEY_SEEDS[scale])])
    cards = np.tile(points, SEEDS[scale])
    print(f"relative error, {SEEDS[scale]} seeds of random hashes:")
    print("\n".join(decade_table(cards, random_errs)))
    print(f"relative error, {KEY_SEEDS[scale]} seeds of sequential string keys through DuckDB's hash():")
    print("\n".join(decade_table(np.tile(points, KEY_SEEDS[scale]), key_errs)))
    exact, trials = exact_fraction(EXACT_SEEDS[scale])
    print(f"exact below SPARSE_MAX: {exact:.3f} of {trials} trials")

    rng = np.random.default_rng(0)
    million = rng.integers(0, _U64, size=1_000_000, dtype=np.uint64, endpoint=True)
    keys = sequential_keys("user-", 1_000_000)
    hll.hash_keys(keys[:10])  # open this thread's connection outside the timing
    hash_s = best_seconds(lambda: hll.hash_keys(keys))
    build_s = best_seconds(lambda: hll.Sketch.from_hashes(million))
    few_users = rng.choice(million[:5000], size=1_000_000)  # stays sparse: the whole array is sorted
    build_few_s = best_seconds(lambda: hll.Sketch.from_hashes(few_users))
    dense = [hll.Sketch.from_hashes(rng.integers(0, _U64, size=20_000, dtype=np.uint64)) for _ in range(1000)]
    merge_s = best_seconds(lambda: hll.merge(dense))
    estimate_s = best_seconds(lambda: hll.estimate_many(dense))
    blobs = pa.array([d.to_bytes() for d in dense], type=pa.binary())
    owners = np.arange(1000) % 100
    unions_s = best_seconds(lambda: hll.merged_estimates(owners, 100, blobs))

    return [
        record("hll_error_p95", float(np.quantile(np.abs(random_errs), 0.95)), "relative", target="<= 0.01"),
        record("hll_error_p50", float(np.median(np.abs(random_errs))), "relative"),
        record("hll_error_max", float(np.abs(random_errs).max()), "relative"),
        record("hll_error_p95_duckdb_keys", float(np.quantile(np.abs(key_errs), 0.95)), "relative", target="<= 0.01"),
        record("hll_exact_below_sparse", float(exact), "fraction", target=">= 1"),
        record("hll_hash_keys", len(keys) / hash_s, "keys/s"),
        record("hll_hash_and_build_1m_keys", best_seconds(lambda: hll.Sketch.from_keys(keys)) * 1e3, "ms"),
        record("hll_build_1m_hashes", build_s * 1e3, "ms", target="<= 500"),
        record("hll_build_1m_hashes_5000_users", build_few_s * 1e3, "ms", target="<= 500"),
        record("hll_merge_1000_dense", merge_s * 1e3, "ms", target="<= 500"),
        record("hll_estimate_1000_dense", estimate_s * 1e3, "ms"),
        record("hll_merged_estimates_1000_blobs", unions_s * 1e3, "ms"),
    ]

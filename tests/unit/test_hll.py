"""The shared HLL++-style sketch (analytics_core/hll.py): DuckDB's hash, exactness, error, merges, bytes, SQL."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics_core import hll
from analytics_core.hll import (
    MAX_RANK,
    REGISTERS,
    SPARSE_MAX,
    Sketch,
    SketchFormatError,
    SketchVersionError,
    hash_keys,
    index_and_rank,
    merge,
)

U64 = np.iinfo(np.uint64).max
EDGE_KEYS = [
    "",
    "a",
    "é",
    "ß",
    "用户",
    "🙂",
    "user_1234567",
    "user_12345678",
    "x" * 7,
    "y" * 8,
    "z" * 9,
    "\x00",
    "a\x00b",
]


def mixed_keys(rng: random.Random, n: int) -> list[str]:
    """n distinct keys of mixed shapes and lengths: ids, UUIDs, numbers, emails, non-ASCII, empty, long."""
    shapes = [
        lambda i: f"usr_{rng.getrandbits(40):x}_{i}",
        lambda i: str(i),
        lambda i: f"{rng.getrandbits(128):032x}-{i}",
        lambda i: f"user{i}@example.com",
        lambda i: f"ユーザー{i}🙂",
        lambda i: f"Ünïcødé-{i}-" + "é" * rng.randint(0, 20),
        lambda i: f"{i}" + "x" * rng.randint(0, 200),
    ]
    keys = {""} if n else set()
    i = 0
    while len(keys) < n:
        keys.add(shapes[i % len(shapes)](i))
        i += 1
    out = list(keys)
    rng.shuffle(out)
    return out


def sequential_keys(prefix: str, n: int) -> pa.Array:
    """prefix + 0..n-1 as an Arrow string array, without a Python loop (structured keys: a hard case for a hash)."""
    numbers = pa.array(np.arange(n, dtype=np.int64)).cast(pa.string())
    return pc.binary_join_element_wise(pa.scalar(prefix), numbers, "")


def random_hashes(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, U64, size=n, dtype=np.uint64, endpoint=True)


def reference_index_rank(h: int) -> tuple[int, int]:
    rest = h & ((1 << 48) - 1)
    return h >> 48, 48 - rest.bit_length() + 1


# --- the hash --------------------------------------------------------------------------------


def test_duckdb_hash_is_the_pinned_one() -> None:
    hll.check_hash(duckdb.connect())
    assert duckdb.__version__ == hll.HASH_DUCKDB_VERSION


@pytest.mark.parametrize("arrow_type", [pa.string(), pa.large_string(), pa.string_view()])
def test_hash_keys_equals_duckdb_sql_over_a_table(arrow_type: pa.DataType) -> None:
    rng = random.Random(1)
    keys = EDGE_KEYS + mixed_keys(rng, 3000) + list(hll._HASH_CHECK)
    con = duckdb.connect()
    con.execute("CREATE TABLE users AS SELECT unnest($k) AS k, generate_subscripts($k, 1) AS i", {"k": keys})
    assert con.execute("SELECT typeof(k) FROM users LIMIT 1").fetchone() == ("VARCHAR",)
    sql = con.execute("SELECT hash(k) FROM users ORDER BY i").fetchnumpy()
    from_sql = next(iter(sql.values())).astype(np.uint64)
    got = hash_keys(pa.array(keys, type=arrow_type))
    assert got.dtype == np.uint64
    np.testing.assert_array_equal(got, from_sql)
    assert got[keys.index("")] == hll._HASH_CHECK[""]


def test_hash_keys_keeps_the_order_of_a_large_array_and_accepts_other_shapes() -> None:
    keys = sequential_keys("u", 300_000)  # several DuckDB row groups: a parallel scan must keep the order
    got = hash_keys(keys)
    con = duckdb.connect()
    con.execute("CREATE TABLE users AS SELECT 'u' || i::VARCHAR AS k, i FROM range(300000) t(i)")
    want = con.execute("SELECT hash(k) AS h FROM users ORDER BY i").fetchnumpy()["h"]
    np.testing.assert_array_equal(got, want)
    sliced = keys.slice(1000, 500)
    np.testing.assert_array_equal(hash_keys(sliced), want[1000:1500])
    np.testing.assert_array_equal(hash_keys(pa.chunked_array([keys.slice(0, 10), keys.slice(10, 10)])), want[:20])
    np.testing.assert_array_equal(hash_keys(pc.dictionary_encode(keys.slice(0, 50))), want[:50])
    np.testing.assert_array_equal(hash_keys(["u0", "u1"]), want[:2])
    assert hash_keys(pa.array([], type=pa.string())).shape == (0,)


def test_hash_keys_refuses_nulls_and_non_strings() -> None:
    with pytest.raises(ValueError, match="null"):
        hash_keys(pa.array(["a", None]))
    with pytest.raises(TypeError, match="strings"):
        hash_keys(pa.array([1, 2]))


def test_hash_keys_is_thread_safe() -> None:
    arrays = [sequential_keys(f"t{i}-", 20_000) for i in range(6)]
    want = [hash_keys(a) for a in arrays]
    got: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(5):
                got[i] = hash_keys(arrays[i])
                assert np.array_equal(got[i], want[i])
        except BaseException as exc:  # the assertion must reach the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(np.array_equal(got[i], want[i]) for i in range(6))


def test_hash_bits_are_uniform_for_sequential_keys() -> None:
    """Top 16 bits (the register) and low bits (the rank's) of hash('k' + i): chi-square within 5 sigma."""
    h = hash_keys(sequential_keys("k", 1_000_000))
    for name, bins in (("top 16", h >> np.uint64(48)), ("bottom 16", h & np.uint64(0xFFFF))):
        counts = np.bincount(bins.astype(np.intp), minlength=1 << 16)
        expected = len(h) / (1 << 16)
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        dof = (1 << 16) - 1
        assert abs(chi2 - dof) < 5 * np.sqrt(2 * dof), name
    _, rank = index_and_rank(h)
    share = np.bincount(rank, minlength=MAX_RANK + 1)[1:8] / len(h)
    np.testing.assert_allclose(share, 0.5 ** np.arange(1, 8), rtol=0.05)


# --- registers -------------------------------------------------------------------------------


def test_index_and_rank_match_the_definition() -> None:
    edges = [0, 1, 2, 3, (1 << 48) - 1, 1 << 47, (1 << 47) - 1, 1 << 48, (1 << 48) + 1, U64, U64 - 1, 1 << 63]
    edges += [(1 << k) + j for k in range(64) for j in (-1, 0, 1) if 0 <= (1 << k) + j <= U64]
    rng = np.random.default_rng(0)
    values = np.concatenate([np.array(edges, dtype=np.uint64), random_hashes(rng, 2000)])
    index, rank = index_and_rank(values)
    want = [reference_index_rank(int(v)) for v in values]
    assert index.tolist() == [w[0] for w in want]
    assert rank.tolist() == [w[1] for w in want]
    assert rank.min() >= 1 and rank.max() <= MAX_RANK


def test_sql_registers_equal_the_python_ones() -> None:
    """The SQL of the module docstring, run by DuckDB, gives the registers Python computes."""
    con = duckdb.connect()
    keys = mixed_keys(random.Random(7), 5000) + EDGE_KEYS
    con.execute("CREATE TABLE users AS SELECT DISTINCT unnest($k) AS user_key", {"k": keys})
    index_sql = hll.REGISTER_INDEX_SQL.format(h="hash(user_key)")
    rank_sql = hll.REGISTER_RANK_SQL.format(h="hash(user_key)")
    rows = con.execute(
        f"SELECT {index_sql} AS register_index, max({rank_sql}) AS register_rank FROM users GROUP BY register_index"
    ).fetchnumpy()
    from_sql = Sketch.from_registers(rows["register_index"], rows["register_rank"])
    from_python = Sketch.from_keys(keys)
    assert from_python.is_sparse  # fewer than SPARSE_MAX keys: its registers are computed from the hashes
    np.testing.assert_array_equal(from_sql.registers, from_python.registers)
    rest_sql = hll.REGISTER_REST_SQL.format(h="hash(user_key)")
    by_min_rest = con.execute(
        f"SELECT register_index, {hll.REGISTER_RANK_SQL.format(h='rest')} AS register_rank FROM "
        f"(SELECT {index_sql} AS register_index, min({rest_sql}) AS rest FROM users GROUP BY 1)"
    ).fetchnumpy()
    assert Sketch.from_registers(by_min_rest["register_index"], by_min_rest["register_rank"]) == from_sql
    packed = con.execute(
        f"SELECT list(register_index * 64 + register_rank ORDER BY register_index) FROM "
        f"(SELECT {index_sql} AS register_index, max({rank_sql}) AS register_rank FROM users GROUP BY 1)"
    ).fetchone()
    assert packed is not None
    assert Sketch.from_packed(packed[0]) == from_sql

    # Per element, including hashes at the edges of the rank (exactness of the bit-string expression).
    edges = [0, 1, (1 << 48) - 1, 1 << 47, (1 << 47) - 1, 1 << 48, U64, (1 << 63) + (1 << 20)]
    edges += [(1 << k) + j for k in range(64) for j in (-1, 0) if (1 << k) + j >= 0]
    con.execute("CREATE TABLE hashes AS SELECT unnest($h::UBIGINT[]) AS h", {"h": edges})
    con.execute("INSERT INTO hashes SELECT hash(user_key) FROM users")
    got = con.execute(
        f"SELECT h, {hll.REGISTER_INDEX_SQL.format(h='h')} AS i, {hll.REGISTER_RANK_SQL.format(h='h')} AS r FROM hashes"
    ).fetchnumpy()
    index, rank = index_and_rank(got["h"].astype(np.uint64))
    np.testing.assert_array_equal(got["i"], index)
    np.testing.assert_array_equal(got["r"], rank)


def test_sparse_sketch_from_a_duckdb_list_of_hashes() -> None:
    """The sparse sketch dbt would store (list(DISTINCT h ORDER BY h)) reads back as UBIGINT or BIGINT."""
    keys = mixed_keys(random.Random(3), 2000)
    con = duckdb.connect()
    con.execute("CREATE TABLE users AS SELECT unnest($k) AS user_key", {"k": keys + keys[:100]})
    row = con.execute(
        "SELECT list(DISTINCT hash(user_key) ORDER BY hash(user_key)), count(DISTINCT hash(user_key)) FROM users"
    ).fetchone()
    assert row is not None
    hashes, n = row
    want = Sketch.from_keys(keys)
    assert Sketch.from_hashes(hashes) == want and n == len(keys)
    signed = np.array(hashes, dtype=np.uint64).view(np.int64).tolist()  # as a BIGINT column would hold them
    assert any(v < 0 for v in signed)
    assert Sketch.from_hashes(signed) == want
    assert Sketch.from_hashes(np.array(signed, dtype=np.int64)) == want
    assert Sketch.from_hashes(pa.array(signed, type=pa.int64())) == want
    mixed = [v if i % 2 else v & U64 for i, v in enumerate(signed)]  # signed and unsigned spellings together
    assert Sketch.from_hashes(mixed) == want


# --- exact below SPARSE_MAX ------------------------------------------------------------------

EXACT_SIZES = [1, 2, 3, 5, 10, 31, 100, 500, 1000, 2500, 4096, 6000, 8000, 8191, 8192]


@pytest.mark.parametrize("seed", range(3))
def test_counts_are_exact_up_to_sparse_max(seed: int) -> None:
    rng = random.Random(seed)
    keys = mixed_keys(rng, SPARSE_MAX)
    for n in EXACT_SIZES:
        subset = keys[:n]
        repeated = subset + rng.choices(subset, k=n)  # repeats change nothing
        sketch = Sketch.from_keys(repeated)
        assert sketch.is_sparse
        assert sketch.estimate() == n
        assert Sketch.from_bytes(sketch.to_bytes()).estimate() == n


@given(st.lists(st.text(max_size=30), max_size=300))
@settings(max_examples=60, deadline=None)
def test_any_strings_count_exactly(keys: list[str]) -> None:
    assert Sketch.from_keys(keys).estimate() == len(set(keys))


def test_one_past_sparse_max_is_dense_and_close() -> None:
    h = random_hashes(np.random.default_rng(5), SPARSE_MAX + 1)
    sketch = Sketch.from_hashes(h)
    assert not sketch.is_sparse
    assert abs(sketch.estimate() / (SPARSE_MAX + 1) - 1) < 0.02
    assert Sketch.from_hashes(h[:SPARSE_MAX]).is_sparse
    # Many repeats of few users stay sparse and exact, however many hashes are given.
    few = np.repeat(h[:100], 300)
    np.random.default_rng(1).shuffle(few)
    assert Sketch.from_hashes(few) == Sketch.from_hashes(h[:100])


def test_empty() -> None:
    empty = Sketch.empty()
    assert empty.estimate() == 0 and empty.is_sparse and empty.to_bytes() == bytes([hll.HEADER_SPARSE])
    assert Sketch.from_keys([]) == empty == merge([])
    assert Sketch.from_registers([], []).estimate() == 0.0


# --- error distribution ----------------------------------------------------------------------


def error_curve(hash_streams: Iterator[np.ndarray], checkpoints: np.ndarray) -> np.ndarray:
    """Relative error at each checkpoint cardinality, the sketch grown by merging chunks of distinct hashes."""
    sketch = Sketch.empty()
    seen = 0
    errors = []
    for n in checkpoints:
        chunk = next(hash_streams)
        assert len(chunk) == n - seen
        sketch = sketch | Sketch.from_hashes(chunk)
        seen = n
        errors.append(sketch.estimate() / n - 1)
    return np.array(errors)


def checkpoints_to(top: float, per_decade: int = 8) -> np.ndarray:
    return np.unique(np.round(np.logspace(0, np.log10(top), int(np.log10(top) * per_decade) + 1)).astype(np.int64))


def test_error_distribution_below_one_percent_at_p95(capsys: pytest.CaptureFixture[str]) -> None:
    """Log-spaced cardinalities 1..10^7: exact up to SPARSE_MAX, p95 relative error < 1 % above it."""
    results: list[tuple[np.ndarray, np.ndarray]] = []  # (cardinalities, errors) per run

    def random_runs(top: float, seeds: range) -> None:
        points = checkpoints_to(top)
        for seed in seeds:
            rng = np.random.default_rng(seed)
            steps = np.diff(points, prepend=0)
            results.append((points, error_curve((random_hashes(rng, int(s)) for s in steps), points)))

    def key_runs(top: float, seeds: range) -> None:
        points = checkpoints_to(top)
        for seed in seeds:
            # Sequential keys "s<seed>:<i>" through DuckDB's hash: checks the real hash's bits, not numpy's.
            h = hash_keys(sequential_keys(f"s{seed}:", int(points[-1])))
            results.append(
                (points, error_curve((h[a:b] for a, b in zip(np.r_[0, points[:-1]], points, strict=True)), points))
            )

    random_runs(1e6, range(20))
    random_runs(1e7, range(100, 108))
    key_runs(1e6, range(4))
    key_runs(1e7, range(200, 201))

    cards = np.concatenate([c for c, _ in results])
    errs = np.abs(np.concatenate([e for _, e in results]))
    assert np.all(errs[cards <= SPARSE_MAX] == 0), "not exact at or below SPARSE_MAX"
    above = errs[cards > SPARSE_MAX]
    lines = ["decade        points   p50 %   p95 %   max %"]
    for lo in range(0, 7):
        sel = (cards >= 10**lo) & (cards < 10 ** (lo + 1)) | ((cards == 10**7) & (lo == 6))
        e = errs[sel] * 100
        lines.append(
            f"1e{lo}..1e{lo + 1}  {sel.sum():8d}  {np.median(e):6.3f}  {np.quantile(e, 0.95):6.3f}  {e.max():6.3f}"
        )
    p95 = float(np.quantile(above, 0.95))
    lines.append(f"above SPARSE_MAX: {len(above)} points, p95 {p95 * 100:.3f} %, max {above.max() * 100:.3f} %")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert p95 < 0.01


# --- merges ----------------------------------------------------------------------------------


def split(rng: np.random.Generator, hashes: np.ndarray, k: int, overlap: bool) -> list[np.ndarray]:
    """A random partition of `hashes` into k parts (some possibly empty); with overlap, parts share some hashes."""
    owner = rng.integers(0, k, size=len(hashes))
    parts = [hashes[owner == i] for i in range(k)]
    if overlap and len(hashes):
        parts = [np.concatenate([p, rng.choice(hashes, size=min(len(hashes), 50))]) for p in parts]
    return parts


SIZES = st.one_of(
    st.integers(0, 200),
    st.integers(SPARSE_MAX - 300, SPARSE_MAX + 300),
    st.integers(SPARSE_MAX, 6 * SPARSE_MAX),
)


@given(n=SIZES, k=st.integers(1, 50), seed=st.integers(0, 2**32), overlap=st.booleans(), through_bytes=st.booleans())
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_merging_any_split_equals_the_sketch_of_the_whole(
    n: int, k: int, seed: int, overlap: bool, through_bytes: bool
) -> None:
    rng = np.random.default_rng(seed)
    hashes = random_hashes(rng, n)
    whole = Sketch.from_hashes(hashes)
    parts = [Sketch.from_hashes(p) for p in split(rng, hashes, k, overlap)]
    if through_bytes:
        parts = [Sketch.from_bytes(p.to_bytes()) for p in parts]
    order = rng.permutation(k)
    all_at_once = merge(parts[i] for i in order)
    one_by_one = Sketch.empty()
    for i in order:
        one_by_one = one_by_one | parts[i]
    # A random binary tree of merges.
    pending = [parts[i] for i in order]
    while len(pending) > 1:
        i = int(rng.integers(0, len(pending) - 1))
        pending[i : i + 2] = [pending[i] | pending[i + 1]]
    for merged in (all_at_once, one_by_one, pending[0]):
        assert merged == whole
        assert merged.to_bytes() == whole.to_bytes()


@given(sizes=st.tuples(SIZES, SIZES, SIZES), seed=st.integers(0, 2**32))
@settings(max_examples=40, deadline=None)
def test_merge_is_commutative_associative_and_idempotent(sizes: tuple[int, int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    common = random_hashes(rng, 100)
    a, b, c = (Sketch.from_hashes(np.concatenate([random_hashes(rng, n), common[: n % 100]])) for n in sizes)
    assert (a | b).to_bytes() == (b | a).to_bytes()
    assert ((a | b) | c).to_bytes() == (a | (b | c)).to_bytes() == merge([c, a, b]).to_bytes()
    assert (a | a).to_bytes() == a.to_bytes()
    assert ((a | b) | b).to_bytes() == (a | b).to_bytes()
    assert (a | Sketch.empty()) == a


def test_sparse_and_dense_mixes() -> None:
    rng = np.random.default_rng(11)
    big, small = random_hashes(rng, 50_000), random_hashes(rng, 3000)
    dense, sparse = Sketch.from_hashes(big), Sketch.from_hashes(small)
    assert not dense.is_sparse and sparse.is_sparse
    both = Sketch.from_hashes(np.concatenate([big, small]))
    assert dense | sparse == both == sparse | dense
    # Two sparse sketches whose union passes SPARSE_MAX become dense.
    a, b = Sketch.from_hashes(big[:5000]), Sketch.from_hashes(big[5000:10000])
    assert a.is_sparse and b.is_sparse and not (a | b).is_sparse
    assert a | b == Sketch.from_hashes(big[:10000])
    # Registers from SQL-style (index, rank) rows merge like the dense sketch itself.
    idx, rank = index_and_rank(big)
    assert Sketch.from_registers(idx, rank) == dense


# --- bytes -----------------------------------------------------------------------------------


def test_bytes_round_trip() -> None:
    rng = np.random.default_rng(2)
    for n in (0, 1, 100, SPARSE_MAX, SPARSE_MAX + 1, 100_000):
        sketch = Sketch.from_hashes(random_hashes(rng, n))
        data = sketch.to_bytes()
        assert len(data) == sketch.nbytes == (1 + 8 * n if n <= SPARSE_MAX else 1 + REGISTERS)
        assert data[0] == (hll.HEADER_SPARSE if n <= SPARSE_MAX else hll.HEADER_DENSE)
        back = Sketch.from_bytes(data)
        assert back == sketch and back.to_bytes() == data
        assert Sketch.from_bytes(bytearray(data)) == Sketch.from_bytes(memoryview(data)) == sketch
    h = np.array([3, 1, 2], dtype=np.uint64)
    assert int.from_bytes(Sketch.from_hashes(h).to_bytes()[1:9], "little") == 1  # little-endian, sorted


def test_sparse_bytes_are_read_as_the_set_they_hold() -> None:
    """An append-only value (unsorted, repeats, past SPARSE_MAX) reads as the canonical sketch of its set."""
    rng = np.random.default_rng(4)
    h = random_hashes(rng, SPARSE_MAX + 10)
    for hashes in (h[:500], h):
        appended = np.concatenate([hashes[::-1], hashes[:50]])
        data = bytes([hll.HEADER_SPARSE]) + appended.astype("<u8").tobytes()
        assert Sketch.from_bytes(data) == Sketch.from_hashes(hashes)


def test_wrong_version_is_refused_clearly() -> None:
    data = bytearray(Sketch.from_hashes(np.arange(10, dtype=np.uint64)).to_bytes())
    data[0] = (2 << 4) | hll.SPARSE
    with pytest.raises(SketchVersionError, match=r"version 2.*reads version 1.*hash"):
        Sketch.from_bytes(bytes(data))
    dense = bytearray(Sketch.from_hashes(random_hashes(np.random.default_rng(0), 20_000)).to_bytes())
    dense[0] = 0x01  # version 0
    with pytest.raises(SketchVersionError):
        Sketch.from_bytes(bytes(dense))
    with pytest.raises(SketchVersionError):
        hll.merged_estimates([0], 1, [bytes(dense)])
    with pytest.raises(TypeError, match="from_bytes"):
        merge([Sketch.empty(), bytes(dense)])  # type: ignore[list-item]


def test_bad_bytes_are_refused() -> None:
    sparse = Sketch.from_hashes(np.arange(1, 11, dtype=np.uint64)).to_bytes()
    dense = Sketch.from_hashes(random_hashes(np.random.default_rng(0), 20_000)).to_bytes()
    for bad in (b"", sparse[:-1], sparse[:-7], dense[:-1], dense[: 1 + REGISTERS // 2], dense + b"\x00"):
        with pytest.raises(SketchFormatError):
            Sketch.from_bytes(bad)
    with pytest.raises(SketchFormatError, match="kind"):
        Sketch.from_bytes(bytes([(hll.FORMAT_VERSION << 4) | 7]))
    with pytest.raises(SketchFormatError, match="rank"):
        Sketch.from_bytes(dense[:-1] + bytes([MAX_RANK + 1]))
    with pytest.raises(ValueError, match="rank"):
        Sketch.from_registers([0], [MAX_RANK + 1])
    with pytest.raises(ValueError, match="index"):
        Sketch.from_registers([REGISTERS], [1])


# --- estimates for the API -------------------------------------------------------------------


def test_estimate_many_and_merged_estimates() -> None:
    rng = np.random.default_rng(9)
    sets = [random_hashes(rng, n) for n in (0, 10, 5000, 9000, 40_000, 300_000)]
    sketches = [Sketch.from_hashes(h) for h in sets]
    many = hll.estimate_many(sketches)
    assert many.tolist() == [s.estimate() for s in sketches]
    assert many[:3].tolist() == [0, 10, 5000]
    # Unions 0: sets 1 and 3 (as bytes); 1: set 4 and a null; 2: nothing; 3: all of them (Sketch objects).
    owners = [0, 0, 1, 1, 3, 3, 3, 3, 3, 3]
    items = [sketches[1].to_bytes(), sketches[3].to_bytes(), sketches[4].to_bytes(), None, *sketches]
    for column in (items, pa.array([i.to_bytes() if isinstance(i, Sketch) else i for i in items], type=pa.binary())):
        got = hll.merged_estimates(owners, 4, column)
        want = [
            (sketches[1] | sketches[3]).estimate(),
            sketches[4].estimate(),
            0.0,
            merge(sketches).estimate(),
        ]
        np.testing.assert_allclose(got, want, rtol=1e-12)
    assert abs(want[3] / len(np.unique(np.concatenate(sets))) - 1) < 0.02

"""Vectorised decoding of Confluent-framed CanonicalEvent records straight into Arrow columns.

`decode_columns` and the Arrow `SCHEMA` of the canonical columns, the fast path of
analytics_core/decoding.py (the warehouse loader and the realtime consumer both decode with it).
Per-record decoding into dicts (serde.EventDeserializer) runs at ~100k events/s, the loader's whole
budget. Here the Protobuf wire format is walked with numpy for all records of a batch at once: one
pass per field position, each record advancing its own cursor (multi-byte varints and doubles are
read as unaligned 8-byte words, so a timestamp costs one gather). Only the common, well-formed case is
handled; a record this decoder is unsure of (bad header, unknown schema id, unexpected wire type,
truncation, invalid UTF-8) is reported back for the reference decoder to accept or reject.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from analytics_core.events import FIELDS, FieldType

_WIRE: dict[FieldType, int] = {"string": 2, "json": 2, "double": 1, "boolean": 0, "timestamp": 0}
_BY_NUMBER = {f.number: f for f in FIELDS}
_MAX_NUMBER = max(_BY_NUMBER) + 1
_HEADER = 6  # magic byte, 4-byte schema id, message-index list [0]
_PAD = 16  # a varint is read up to 10 bytes ahead
_HIGH_BITS = np.uint64(0x8080808080808080)
_ZERO = {"string": "", "json": "{}", "double": 0.0, "boolean": False, "timestamp": 0}
_ARROW: dict[FieldType, pa.DataType] = {
    "string": pa.large_string(),
    "json": pa.large_string(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}
SCHEMA = pa.schema([pa.field(f.name, _ARROW[f.type], nullable=not f.required) for f in FIELDS])
# Per wire type: bytes of a fixed-size value (64-bit, 32-bit); whether a varint (value or length) comes first.
_FIXED = np.array([0, 8, 0, 0, 0, 4, 0, 0], dtype=np.int64)
_STARTS_WITH_VARINT = np.array([True, False, True, False, False, False, False, False])
# Per tag, as (field number clipped to 0.._MAX_NUMBER) * 8 + wire type: may the walk go on past it
# (a known field with its wire type; an unknown field of a wire type still in use), and is it kept?
_TAG_OK = np.zeros((_MAX_NUMBER + 1) * 8, dtype=bool)
_TAG_OK[_MAX_NUMBER * 8 + np.array([0, 1, 2, 5])] = True
_KEEP = np.zeros_like(_TAG_OK)
for _f in FIELDS:
    _TAG_OK[_f.number * 8 + _WIRE[_f.type]] = _KEEP[_f.number * 8 + _WIRE[_f.type]] = True
for _n in set(range(1, _MAX_NUMBER)) - set(_BY_NUMBER):
    _TAG_OK[_n * 8 + np.array([0, 1, 2, 5])] = True


def _varint(buf: np.ndarray, words: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(value as uint64, byte length; 0 when longer than 10 bytes) of the varint at each position."""
    # Most tags and lengths take one or two bytes: those go byte by byte, and only the varints still
    # going after two bytes (timestamps take eight) read the rest as one 8-byte word each.
    first = buf[pos]
    value = (first & 0x7F).astype(np.uint64)
    length = np.ones(len(pos), dtype=np.int64)
    more = np.flatnonzero(first & 0x80)
    if not more.size:
        return value, length
    second = buf[pos[more] + 1]
    value[more] |= (second & 0x7F).astype(np.uint64) << np.uint64(7)
    length[more] = 2
    more = more[(second & 0x80) != 0]
    if more.size:
        word = words[pos[more] + 2]  # bytes 2-9
        last = ~word & _HIGH_BITS  # the high bit of each byte that could end the varint...
        last &= ~last + np.uint64(1)  # ...the first of them
        word &= (last << np.uint64(1)) - np.uint64(1)  # zero the bytes after it
        # Pack the 7-bit groups: pairs of bytes into 14 bits, pairs of those into 28, then into 56.
        word &= np.uint64(0x7F7F7F7F7F7F7F7F)
        word = (word & np.uint64(0x007F007F007F007F)) | ((word >> np.uint64(1)) & np.uint64(0x3F803F803F803F80))
        word = (word & np.uint64(0x00003FFF00003FFF)) | ((word >> np.uint64(2)) & np.uint64(0x0FFFC0000FFFC000))
        packed = (word & np.uint64(0x000000000FFFFFFF)) | ((word >> np.uint64(4)) & np.uint64(0x00FFFFFFF0000000))
        value[more] |= packed << np.uint64(14)
        length[more] = np.where(last == 0, 0, np.bitwise_count(last - np.uint64(1)) // 8 + 3)
    return value, length


class _Fields:
    """Per field number: whether each record holds it, and its data offset and length, or its varint value.

    Row 0 (no field has number 0) takes the writes of fields that are not kept.
    """

    def __init__(self, n: int) -> None:
        self.seen = np.zeros((_MAX_NUMBER, n), dtype=bool)
        self.offset = np.zeros((_MAX_NUMBER, n), dtype=np.int64)  # varint fields: the value (as int64)
        self.length = np.zeros((_MAX_NUMBER, n), dtype=np.int64)


def _walk(buf: np.ndarray, words: np.ndarray, starts: np.ndarray, ends: np.ndarray, bad: np.ndarray) -> _Fields:
    """Walk every record's fields in lock step; marks records it cannot follow in `bad`."""
    n = len(starts)
    fields = _Fields(n)
    # The records still being walked, with their cursor and end, kept compact from step to step.
    rows = np.flatnonzero(~bad & (starts + _HEADER < ends))
    pos, end = starts[rows] + _HEADER, ends[rows]
    while rows.size:
        tag, tag_len = _varint(buf, words, pos)
        number, wire = (tag >> np.uint64(3)).astype(np.int64), (tag & np.uint64(7)).astype(np.int64)
        code = np.clip(number, 0, _MAX_NUMBER) * 8 + wire
        p = pos + tag_len
        value, value_len = _varint(buf, words, p)
        # Arithmetic with 0/1 masks rather than np.where, which is several times slower on mixed rows.
        is_len, is_varint, varint_first = wire == 2, wire == 0, _STARTS_WITH_VARINT[wire]
        length = value.view(np.int64) * is_len + _FIXED[wire]
        data = p + value_len * is_len
        new_pos = p + value_len * varint_first + length
        wrong = ~_TAG_OK[code] | (tag_len == 0) | ((value_len == 0) & varint_first) | (new_pos > end)
        wrong |= (length < 0) | (length > end - data)  # the latter also when data + length overflows
        keep = _KEEP[code] & ~wrong
        # Later occurrences overwrite earlier ones (Protobuf's last-wins); fields not kept go to row 0.
        flat = number * keep * n + rows
        fields.seen.ravel()[flat] = keep
        fields.offset.ravel()[flat] = data + (value.view(np.int64) - data) * is_varint  # the value of a varint
        fields.length.ravel()[flat] = length
        bad[rows[wrong]] = True
        go_on = ~wrong & (new_pos < end)
        rows, pos, end = rows[go_on], new_pos[go_on], end[go_on]
    return fields


def _strings(arena: pa.Array, offset: np.ndarray, length: np.ndarray, seen: np.ndarray, starts: np.ndarray) -> pa.Array:
    # Strings stay in the record buffer: alternate "gap" and "value" slices cover it in order, so one
    # zero-copy array views them all and a take() copies out the values.
    # An absent field has offset and length 0: its empty slice goes at the record's start.
    n = len(offset)
    begin = offset + starts * ~seen
    bounds = np.empty(2 * n + 2, dtype=np.int64)
    bounds[0], bounds[1:-1:2], bounds[2:-1:2], bounds[-1] = 0, begin, begin + length, len(arena)
    view = pa.LargeStringArray.from_buffers(2 * n + 1, pa.py_buffer(bounds), arena.buffers()[1])
    index = pa.array(np.arange(1, 2 * n, 2, dtype=np.int64), mask=~seen)
    return view.take(index)


def decode_columns(values: list[bytes], known_ids: set[int]) -> tuple[pa.Table, np.ndarray]:
    """An Arrow table (SCHEMA) of the records, and a mask of those it could not decode (their rows are junk)."""
    n = len(values)
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=n)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    joined = b"".join([*values, bytes(_PAD)])  # not join() + pad: that copies the whole batch again
    buf = np.frombuffer(joined, dtype=np.uint8)
    # words[i]: the 8 bytes at buf[i] as one little-endian integer (an unaligned view, no copy).
    words = np.ndarray((len(joined) - 7,), dtype="<u8", buffer=joined, strides=(1,))
    arena = pa.array(np.frombuffer(joined, dtype=np.uint8))
    bad = lengths < _HEADER
    head = np.where(bad, 0, starts)
    schema_id = (buf[head + 1].astype(np.int64) << 24) | (buf[head + 2].astype(np.int64) << 16)
    schema_id |= (buf[head + 3].astype(np.int64) << 8) | buf[head + 4]
    bad |= (buf[head] != 0) | (buf[head + 5] != 0) | ~np.isin(schema_id, np.fromiter(known_ids, np.int64))
    fields = _walk(buf, words, starts, ends, bad)
    columns = []
    for f in FIELDS:
        seen = fields.seen[f.number]
        if f.type in ("string", "json"):
            col = _strings(arena, fields.offset[f.number], fields.length[f.number], seen, starts)
            try:
                col.validate(full=True)  # Protobuf strings must be UTF-8; DuckDB trusts Arrow input
            except pa.ArrowInvalid:
                bad |= seen  # which row is at fault is left to the reference decoder
        elif f.type == "double":
            col = pa.array(words[fields.offset[f.number]].view("<f8"), mask=~seen)  # absent: offset 0, masked
        elif f.type == "boolean":
            col = pa.array(fields.offset[f.number] != 0, mask=~seen)
        else:
            col = pa.array(fields.offset[f.number], mask=~seen).cast(_ARROW[f.type])
        if f.required:
            col = col.fill_null(pa.scalar(_ZERO[f.type], _ARROW[f.type]))
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=SCHEMA), bad

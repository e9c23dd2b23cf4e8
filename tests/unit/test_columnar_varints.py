"""The columnar decoder's varints (one byte to ten, read as 8-byte words) and its handling of damaged records:
whatever it does not flag must be exactly what the reference decoder reads.
"""

from __future__ import annotations

import random

import pyarrow as pa

from analytics_core.columnar import decode_columns
from analytics_core.serde import EventDeserializer, EventSerializer, encode_payload, frame
from bench.events import iter_events
from tests.unit.test_columnar import as_event


def test_varints_of_every_length_including_ten_byte_negatives() -> None:
    stamps = [0, 1, 127, 128, 2**14 - 1, 2**14, 2**21, 2**49, 2**56 - 1, 2**56, 2**62, 2**63 - 1, -1, -(2**63)]
    values = [frame(1, encode_payload({"event_id": "e", "is_bot": True, "timestamp": t, "sent_at": t})) for t in stamps]
    table, bad = decode_columns(values, {1})
    assert not bad.any()
    reference = EventDeserializer({1})
    assert table.column("timestamp").cast(pa.int64()).to_pylist() == stamps
    assert table.column("sent_at").cast(pa.int64()).to_pylist() == [reference(v)["sent_at"] for v in values]


def damaged(rng: random.Random, value: bytes) -> bytes:
    b = bytearray(value)
    kind = rng.randrange(4)
    if kind == 0:  # cut anywhere, also inside a varint at the end of the batch
        return bytes(b[: rng.randrange(len(b) + 1)])
    if kind == 1:  # flipped bytes: lengths, tags, wire types, string contents
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == 2:  # inserted junk: a varint that never ends, huge lengths (2**35, 2**63 - 1), noise
        i = rng.randrange(6, len(b) + 1)
        junk = [
            bytes([0xFF] * 11),
            bytes([0x0A, *[0xFF] * 4, 0x7F]),
            bytes([0x0A, *[0xFF] * 8, 0x7F]),
            rng.randbytes(8),
        ]
        b[i:i] = rng.choice(junk)
    return bytes(b)


def test_damaged_records_are_flagged_or_read_exactly_as_the_reference_reads_them() -> None:
    rng = random.Random(5)
    good = [EventSerializer(1)(e) for e in iter_events(200, seed=11)]
    values = [damaged(rng, v) for v in good * 3]
    reference = EventDeserializer({1})

    def check(batch: list[bytes]) -> int:
        table, bad = decode_columns(batch, {1})
        accepted = [v for v, b in zip(batch, bad, strict=True) if not b]
        rows = table.filter(pa.array(~bad)).to_pylist()  # flagged rows hold junk, even invalid UTF-8
        assert [as_event(r) for r in rows] == [reference(v) for v in accepted]
        return len(accepted)

    # Alone, and in one batch (after the last record the buffer ends: a cut varint must not read past it).
    assert sum(check([v]) for v in values) > len(values) // 10
    check(values + good)

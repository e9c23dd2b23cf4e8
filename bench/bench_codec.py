"""Per-event encode and decode throughput of the project's Protobuf codec against Avro (fastavro)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from analytics_core.events import FIELDS
from analytics_core.serde import decode_payload, encode_payload
from analytics_core.settings import Settings
from bench.events import make_events
from bench.harness import Record, Scale, record

EVENTS = {"small": 200_000, "large": 1_000_000}
# Best of a few passes: on 2 shared cores single passes vary by +-30% (GC, the broker's threads).
REPEATS = 3
_AVRO_TYPES = {"string": "string", "json": "string", "double": "double", "boolean": "boolean"}


def avro_schema(logical_timestamps: bool) -> dict[str, Any]:
    """An Avro record schema derived from events.FIELDS, optional fields as ["null", T]."""
    fields: list[dict[str, Any]] = []
    for f in FIELDS:
        if f.type == "timestamp":
            t: Any = {"type": "long", "logicalType": "timestamp-micros"} if logical_timestamps else "long"
        else:
            t = _AVRO_TYPES[f.type]
        if f.required:
            fields.append({"name": f.name, "type": t, "doc": f.doc})
        else:
            fields.append({"name": f.name, "type": ["null", t], "default": None, "doc": f.doc})
    return {"type": "record", "name": "CanonicalEvent", "namespace": "analytics.tracking", "fields": fields}


def avro_codec() -> tuple[Callable[[dict[str, Any]], bytes], Callable[[bytes], dict[str, Any]]]:
    """(encode, decode) with fastavro; decoding without the logical type returns int microseconds."""
    writer = parse_schema(avro_schema(logical_timestamps=True))
    # Same binary layout; without timestamp-micros fastavro leaves the longs as ints, like the protobuf path.
    plain = parse_schema(avro_schema(logical_timestamps=False))

    def encode(event: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        schemaless_writer(buf, writer, event)
        return buf.getvalue()

    def decode(data: bytes) -> dict[str, Any]:
        return cast(dict[str, Any], schemaless_reader(io.BytesIO(data), plain, None))

    return encode, decode


def _rate(fn: Callable[[Any], Any], items: Sequence[Any]) -> float:
    t0 = time.perf_counter()
    for item in items:
        fn(item)
    return len(items) / (time.perf_counter() - t0)


def _check_round_trip(codec: str, events: list[dict[str, Any]], decoded: list[dict[str, Any]]) -> None:
    if decoded != events:
        bad = next(i for i, (a, b) in enumerate(zip(events, decoded, strict=True)) if a != b)
        raise AssertionError(f"{codec} round trip changed event {bad}: {events[bad]} -> {decoded[bad]}")


def run(settings: Settings, scale: Scale) -> list[Record]:
    """codec_{avro,protobuf}_{encode,decode} in events/s, plus the mean encoded size."""
    events = make_events(EVENTS[scale])
    avro_encode, avro_decode = avro_codec()
    # Untimed first passes: they warm both codecs up and give the decoders their input.
    avro_bytes = [avro_encode(e) for e in events]
    pb_bytes = [encode_payload(e) for e in events]
    _check_round_trip("avro", events, [avro_decode(b) for b in avro_bytes])
    _check_round_trip("protobuf", events, [decode_payload(b) for b in pb_bytes])

    cases: list[tuple[str, Callable[[Any], Any], Sequence[Any]]] = [
        ("avro_encode", avro_encode, events),
        ("protobuf_encode", encode_payload, events),
        ("avro_decode", avro_decode, avro_bytes),
        ("protobuf_decode", decode_payload, pb_bytes),
    ]
    best = dict.fromkeys((name for name, _, _ in cases), 0.0)
    # Interleaved so a noisy moment on the shared cores hits both codecs, not just one; best pass wins.
    for _ in range(REPEATS):
        for name, fn, items in cases:
            best[name] = max(best[name], _rate(fn, items))

    avro_e = record("codec_avro_encode", best["avro_encode"], "events/s")
    avro_d = record("codec_avro_decode", best["avro_decode"], "events/s")
    avro_size = record("codec_avro_size", sum(map(len, avro_bytes)) / len(events), "bytes/event")
    pb_size = sum(map(len, pb_bytes)) / len(events)
    return [
        avro_e,
        avro_d,
        record("codec_protobuf_encode", best["protobuf_encode"], "events/s", baseline=avro_e, target=">= 1.0 x avro"),
        record("codec_protobuf_decode", best["protobuf_decode"], "events/s", baseline=avro_d, target=">= 1.0 x avro"),
        avro_size,
        record("codec_protobuf_size", pb_size, "bytes/event", baseline=avro_size),
    ]

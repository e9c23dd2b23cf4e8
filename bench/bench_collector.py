"""collector_ingest: events/s through /v1/batch (batches of 100) against kafka_produce_raw; collector_latency_p99.

Also where the CPU of the timed part went, in µs an event: the collector's workers, Redis, the Kafka
broker and this process (the load client), read from /proc. On 2 cores their sum bounds the rate.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from confluent_kafka import TopicPartition

from analytics_core.clients import kafka_admin, kafka_consumer
from analytics_core.settings import Settings
from analytics_core.topics import Topics, ensure_topics
from bench.cpu import CpuMeter, children, stack_servers
from bench.harness import Record, Scale, record
from generator.config import GeneratorConfig
from generator.run import run as generate
from generator.segment import BATCH_LIMIT, to_segment
from tenants import TenantStore, create_tenant_with_keys

EVENTS: dict[Scale, int] = {"small": 200_000, "large": 2_000_000}
CONCURRENCY = 32
WARMUP = 50  # batches sent before timing
WRITE_KEY = "wk_bench_collector"


class _Capture:
    """A generator sink that keeps the valid events (the bench measures ingest, not dead letters)."""

    name = "capture"

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def send(self, events: list[dict[str, Any]], invalid: dict[int, str]) -> None:
        self.events += [e for i, e in enumerate(events) if i not in invalid]

    def close(self) -> dict[str, int]:
        return {}


def _bodies(n: int) -> list[bytes]:
    """Segment /v1/batch bodies of 100 generated messages each, with unique messageIds."""
    config = GeneratorConfig(seed=3, days=1, events_per_day=int(n * 1.1), invalid_share=0.0, duplicate_share=0.0)
    sink = _Capture()
    generate(config, sink)
    messages = [to_segment(e, client_clock=True) for e in sink.events[:n]]
    now = datetime.now(UTC).isoformat()
    return [
        orjson.dumps({"batch": messages[i : i + BATCH_LIMIT], "sentAt": now})
        for i in range(0, len(messages), BATCH_LIMIT)
    ]


async def _load(host: str, port: int, bodies: list[bytes]) -> tuple[float, list[float]]:
    """POST every body over CONCURRENCY keep-alive connections; (seconds, per-request latencies).

    A bare asyncio HTTP/1.1 client: httpx spent a whole core of the two on itself, which measured the
    client rather than the collector.
    """
    auth = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    head = (f"POST /v1/batch HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Basic {auth}\r\n"
            "Content-Type: application/json\r\nContent-Length: ")  # fmt: skip
    requests = [f"{head}{len(b)}\r\n\r\n".encode() + b for b in bodies]
    latencies: list[float] = []
    queue = iter(requests)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for request in queue:
                t0 = time.perf_counter()
                writer.write(request)
                status_line = await reader.readline()
                headers = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
                length = int(headers.split("content-length:", 1)[1].split("\r\n", 1)[0])
                answer = await reader.readexactly(length)
                latencies.append(time.perf_counter() - t0)
                if b" 200 " not in status_line:
                    raise RuntimeError(f"collector answered {status_line!r}: {answer[:200]!r}")
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.perf_counter() - t0, latencies


def _cpu_record_name(party: str) -> str:
    return "collector_cpu_per_event" if party == "collector" else f"collector_{party}_cpu_per_event"


def _topic_count(settings: Settings, topic: str) -> int:
    consumer = kafka_consumer(settings, "bench.collector.count")
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts)
    finally:
        consumer.close()


def _start_collector(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    workers = str(os.cpu_count() or 1)
    cmd = [sys.executable, "-m", "uvicorn", "collector.main:build_app", "--factory", "--host", "127.0.0.1",
           "--port", str(port), "--workers", workers, "--log-level", "warning", "--no-access-log"]  # fmt: skip
    proc = subprocess.Popen(cmd, env={**os.environ, **env})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("collector did not answer /healthz within 60 s")


def run(settings: Settings, scale: Scale) -> list[Record]:
    """Ingest rate through the whole collector (auth, validation, enrichment, dedupe, produce with acks)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    prefix = f"bench.collector.{stamp}."
    bench = settings.model_copy(update={"topic_prefix": prefix})
    topics = Topics.from_settings(bench)
    ensure_topics(bench)
    bodies = _bodies(EVENTS[scale])
    sent = sum(len(orjson.loads(b)["batch"]) for b in bodies)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "tenants.sqlite"
        create_tenant_with_keys(
            # A tenant of its own: the dedupe window would drop a previous run's (identical) event ids.
            TenantStore(db),
            f"bench_{stamp.lower()}",
            WRITE_KEY,
            "rk_bench_collector",
            events_per_second_limit=10_000_000,
        )
        port = 18_181
        proc = _start_collector({"ANALYTICS_TOPIC_PREFIX": prefix, "ANALYTICS_TENANTS_DB": str(db)}, port)
        try:
            asyncio.run(_load("127.0.0.1", port, bodies[:WARMUP]))  # connections, schema id, caches
            collector = [proc.pid, *children(proc.pid)]
            meter = CpuMeter({"collector": collector, "client": [os.getpid()], **stack_servers(settings)})
            meter.start()
            seconds, latencies = asyncio.run(_load("127.0.0.1", port, bodies[WARMUP:]))
            cpu = meter.stop()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        produced = _topic_count(bench, topics.events)
        admin = kafka_admin(bench)
        for future in admin.delete_topics(list(topics.all())).values():
            future.result()
    if produced != sent:
        raise RuntimeError(f"sent {sent} events but {produced} reached {topics.events}")
    timed = sum(len(orjson.loads(b)["batch"]) for b in bodies[WARMUP:])
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    return [
        record(
            "collector_ingest",
            timed / seconds,
            "events/s",
            baseline="kafka_produce_raw",
            target=">= 0.5 x kafka_produce_raw",
        ),
        record("collector_latency_p99", p99, "ms"),
        *(record(_cpu_record_name(name), used / timed * 1e6, "us/event") for name, used in cpu.items()),
    ]

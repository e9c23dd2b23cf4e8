"""collector_ingest: events/s through /v1/batch (batches of 100) against kafka_produce_raw; collector_latency_p99."""

from __future__ import annotations

import asyncio
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
from bench.harness import Record, Scale, record
from generator.config import GeneratorConfig
from generator.run import run as generate
from generator.segment import BATCH_LIMIT, to_segment
from tenants import TenantStore, create_tenant_with_keys

EVENTS: dict[Scale, int] = {"small": 200_000, "large": 2_000_000}
CONCURRENCY = 32
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


async def _load(url: str, bodies: list[bytes]) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue = iter(bodies)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(auth=(WRITE_KEY, ""), limits=limits, timeout=60, headers=headers) as client:

        async def worker() -> None:
            for body in queue:
                t0 = time.perf_counter()
                r = await client.post(url, content=body)
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    raise RuntimeError(f"collector answered {r.status_code}: {r.text[:200]}")

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return time.perf_counter() - t0, latencies


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
    prefix = f"bench.collector.{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}."
    bench = settings.model_copy(update={"topic_prefix": prefix})
    topics = Topics.from_settings(bench)
    ensure_topics(bench)
    bodies = _bodies(EVENTS[scale])
    sent = sum(len(orjson.loads(b)["batch"]) for b in bodies)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "tenants.sqlite"
        create_tenant_with_keys(TenantStore(db), "bench_tenant", WRITE_KEY, "rk_bench_collector")
        port = 18_181
        proc = _start_collector({"ANALYTICS_TOPIC_PREFIX": prefix, "ANALYTICS_TENANTS_DB": str(db)}, port)
        try:
            url = f"http://127.0.0.1:{port}/v1/batch"
            asyncio.run(_load(url, bodies[:20]))  # warm-up: connections, schema id, caches
            seconds, latencies = asyncio.run(_load(url, bodies[20:]))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        produced = _topic_count(bench, topics.events)
        admin = kafka_admin(bench)
        for future in admin.delete_topics(list(topics.all())).values():
            future.result()
    if produced != sent:
        raise RuntimeError(f"sent {sent} events but {produced} reached {topics.events}")
    timed = sum(len(orjson.loads(b)["batch"]) for b in bodies[20:])
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
    ]

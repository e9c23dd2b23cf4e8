"""Freshness: seconds from the collector's 200 to the event being visible in the query API.

The collector, the realtime consumer and the query API run as subprocesses (`analytics collector`,
`analytics realtime`, `analytics api`) on fresh topics, a fresh Redis key prefix, a tenant of
their own and an empty lake (dbt builds its empty models if the API needs them). One Segment
track event at a time is POSTed to /v1/batch; the clock starts when the collector's 200 arrives:

- live: a thread reads /api/v1/live (Server-Sent Events); the event is visible at the first
  `counters` frame in which a minute's `traffic_events` (bots counted too) is above what the last
  frame before the POST said. Per minute rather than the window's total: a minute leaving the
  5-minute window would otherwise hide the increase.
- query: /api/v1/query is polled every 50 ms for `traffic_events` by minute over the last hour
  until a minute's count rises; each poll asks a distinct `limit` so the answer cache misses.

Events are paced with a random pause so they do not lock onto the consumer's batch clock or the
stream's heartbeat. Baseline for context: the collector's own answer time in the same run.
"""

from __future__ import annotations

import json
import random
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from analytics_core import warehouse
from analytics_core.settings import Settings
from analytics_core.topics import Topics, ensure_topics
from bench.bench_kafka import _delete
from bench.bench_query import (
    Service,
    build_dbt,
    check_redis,
    delete_redis_keys,
    free_port,
    percentile,
    service_env,
    start_api,
)
from bench.harness import Record, Scale, record
from tenants import TenantStore, create_tenant_with_keys

EVENTS: dict[Scale, int] = {"small": 100, "large": 200}  # timed events per path
METRIC = "traffic_events"  # counts bots too: nothing the bench sends can be filtered out
EVENT_TIMEOUT_S = 10.0  # an event not visible by then counts as this late
WARMUP_TIMEOUT_S = 90.0  # consumer group join, first schema lookups
POLL_S = 0.05
PAUSE_S = (0.05, 0.4)  # random pause between events
MAX_MISSED_SHARE = 0.05


class SseParser:
    """Frames of a text/event-stream fed line by line (line ends removed): (event, data) per frame."""

    def __init__(self) -> None:
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        if not line:  # a blank line ends the frame; one without data is dropped (the spec's rule)
            frame = (self._event or "message", "\n".join(self._data)) if self._data else None
            self._event, self._data = None, []
            return frame
        if line.startswith(":"):  # a comment
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None  # id and retry do not matter here


def minute_counts(minutes: list[dict[str, Any]], metric: str = METRIC, key: str = "minute") -> dict[str, float]:
    """{minute start: value} of a counters frame's `minutes` (or an answer's rows, key `bucket`)."""
    return {str(m[key]): float(m.get(metric) or 0) for m in minutes}


def increased(before: dict[str, float], after: dict[str, float]) -> bool:
    """Whether some minute counts more than before (a minute that left the window does not count)."""
    return any(value > before.get(minute, 0.0) for minute, value in after.items())


class LiveWatcher:
    """Reads /api/v1/live on a thread and keeps every `counters` frame with its arrival time."""

    def __init__(self, url: str, read_key: str) -> None:
        self.frames: list[tuple[float, dict[str, Any]]] = []
        self.cond = threading.Condition()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {read_key}"}, timeout=httpx.Timeout(10.0, read=None)
        )
        self._thread = threading.Thread(target=self._run, name="bench-live", daemon=True)

    def start(self) -> LiveWatcher:
        self._thread.start()
        return self

    def _run(self) -> None:
        parser = SseParser()
        try:
            with self._client.stream("GET", "/api/v1/live") as answer:
                if answer.status_code != 200:
                    raise RuntimeError(f"/api/v1/live answered {answer.status_code}: {answer.read()[:300]!r}")
                for line in answer.iter_lines():
                    if self._stop.is_set():
                        return
                    frame = parser.feed(line)
                    if frame is not None and frame[0] == "counters":
                        data = json.loads(frame[1])
                        arrived = time.perf_counter()
                        with self.cond:
                            self.frames.append((arrived, data))
                            self.cond.notify_all()
        except BaseException as exc:  # reported to the waiting bench thread
            if not self._stop.is_set():
                self.error = exc
        finally:
            with self.cond:
                self.cond.notify_all()

    def mark(self) -> tuple[int, dict[str, float]]:
        """(number of frames so far, per-minute counts of the latest frame)."""
        with self.cond:
            latest = minute_counts(self.frames[-1][1]["minutes"]) if self.frames else {}
            return len(self.frames), latest

    def wait_for(self, since: int, before: dict[str, float], timeout: float) -> float | None:
        """Arrival time of the first frame from index `since` on in which a minute counts more than `before`.

        None on timeout.
        """
        deadline = time.monotonic() + timeout
        i = since
        with self.cond:
            while True:
                while i < len(self.frames):
                    arrived, data = self.frames[i]
                    i += 1
                    if increased(before, minute_counts(data["minutes"])):
                        return arrived
                if self.error is not None:
                    raise RuntimeError(f"live stream failed: {self.error}") from self.error
                if not self._thread.is_alive():
                    raise RuntimeError("live stream ended")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.cond.wait(remaining)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)  # the stream sends a heartbeat every few seconds
        self._client.close()


class _Sender:
    """One Segment track event per POST to the collector; collects the collector's answer times."""

    def __init__(self, url: str, write_key: str, run_id: str) -> None:
        self._client = httpx.Client(base_url=url, auth=(write_key, ""), timeout=30)
        self._run_id = run_id
        self._n = 0
        self.acks: list[float] = []

    def send(self) -> float:
        """POST one event; perf_counter time at which the 200 arrived."""
        self._n += 1
        now = datetime.now(UTC).isoformat()
        message = {
            "type": "track",
            "event": "page_view",
            "messageId": f"fresh-{self._run_id}-{self._n}",
            "userId": f"fresh-user-{self._n % 20}",
            "timestamp": now,
            "properties": {"path": "/freshness"},
            "context": {"page": {"path": "/freshness"}},
        }
        body = orjson.dumps({"batch": [message], "sentAt": now})
        t0 = time.perf_counter()
        answer = self._client.post("/v1/batch", content=body, headers={"Content-Type": "application/json"})
        ok = time.perf_counter()
        if answer.status_code != 200:
            raise RuntimeError(f"collector answered {answer.status_code}: {answer.text[:300]}")
        self.acks.append(ok - t0)
        return ok

    def close(self) -> None:
        self._client.close()


class _Poller:
    """`traffic_events` by minute over the last hour from /api/v1/query, a distinct request each time."""

    def __init__(self, client: httpx.Client, max_rows: int) -> None:
        self._client = client
        self._limits = iter(range(1000, max_rows + 1))  # a new `limit` each time: the cache must miss
        self.sources: set[str] = set()

    def body(self) -> dict[str, Any]:
        minute = datetime.now(UTC).replace(second=0, microsecond=0)
        return {
            "metrics": [METRIC],
            "start": (minute - timedelta(minutes=59)).isoformat(),
            "end": (minute + timedelta(minutes=1)).isoformat(),
            "granularity": "minute",
            "limit": next(self._limits),
        }

    def counts(self) -> tuple[float, dict[str, float]]:
        """(perf_counter time the answer arrived, {bucket: count})."""
        answer = self._client.post("/api/v1/query", json=self.body())
        arrived = time.perf_counter()
        if answer.status_code != 200:
            raise RuntimeError(f"/api/v1/query answered {answer.status_code}: {answer.text[:500]} (see the API log)")
        doc = answer.json()
        if doc["provenance"]["cache"]["hit"]:
            raise RuntimeError("a distinct poll was answered from the cache")
        self.sources |= {part["source"] for part in doc["provenance"]["parts"]}
        buckets = {
            str(int(datetime.fromisoformat(r["bucket"]).timestamp())): float(r["values"].get(METRIC) or 0)
            for r in doc["rows"]
        }
        return arrived, buckets


def _ready_for_queries(settings: Settings, api: Service, client: httpx.Client, scratch: Path, poller: _Poller) -> None:
    """The engine answers /query; without dbt models it may not (503): then build them once."""
    answer = client.post("/api/v1/query", json=poller.body())
    if answer.status_code == 200:
        return
    if answer.status_code != 503:
        raise api.failed(f"/api/v1/query answered {answer.status_code}: {answer.text[:500]}")
    print(f"freshness bench: the API answered 503 ({answer.text[:200]}); building the dbt models", flush=True)
    build_dbt(settings, scratch)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        answer = client.post("/api/v1/query", json=poller.body())
        if answer.status_code == 200:
            return
        time.sleep(0.5)
    raise api.failed(f"/api/v1/query still answers {answer.status_code} after dbt: {answer.text[:500]}")


def _phase(n: int, rng: random.Random, observe: Callable[[], tuple[float, float | None]]) -> tuple[list[float], int]:
    """n events, each sent and watched by `observe` ((the collector's 200, first sight or None)); (latencies, missed).

    An event not seen within EVENT_TIMEOUT_S counts as missed, at that timeout; a pause follows each.
    """
    latencies: list[float] = []
    missed = 0
    for _ in range(n):
        ok, seen = observe()
        if seen is None:
            missed += 1
            latencies.append(EVENT_TIMEOUT_S)
        else:
            # Can be slightly negative: a live frame may arrive before the collector's answer does.
            latencies.append(seen - ok)
        time.sleep(rng.uniform(*PAUSE_S))
    return latencies, missed


def _live_phase(sender: _Sender, watcher: LiveWatcher, n: int, rng: random.Random) -> tuple[list[float], int]:
    """Seconds from the collector's 200 to the first counters frame showing each event; (latencies, missed)."""

    def observe() -> tuple[float, float | None]:
        since, before = watcher.mark()
        ok = sender.send()
        return ok, watcher.wait_for(since, before, EVENT_TIMEOUT_S)

    return _phase(n, rng, observe)


def _query_phase(sender: _Sender, poller: _Poller, n: int, rng: random.Random) -> tuple[list[float], int]:
    """Seconds from the collector's 200 to the first /query answer showing each event; (latencies, missed)."""

    def observe() -> tuple[float, float | None]:
        _, before = poller.counts()
        ok = sender.send()
        while time.perf_counter() - ok < EVENT_TIMEOUT_S:
            asked = time.perf_counter()
            arrived, after = poller.counts()
            if increased(before, after):
                return ok, arrived
            time.sleep(max(0.0, POLL_S - (time.perf_counter() - asked)))
        return ok, None

    return _phase(n, rng, observe)


def _warm_up(sender: _Sender, watcher: LiveWatcher) -> None:
    """Send events until the live stream shows one (the consumer has joined and applies batches)."""
    deadline = time.monotonic() + WARMUP_TIMEOUT_S
    while time.monotonic() < deadline:
        since, before = watcher.mark()
        sender.send()
        if watcher.wait_for(since, before, 3.0) is not None:
            return
    raise RuntimeError(f"no event showed in /api/v1/live within {WARMUP_TIMEOUT_S:.0f} s")


def run(settings: Settings, scale: Scale) -> list[Record]:
    """freshness_p99 (live SSE) and freshness_query_p99 (polled /api/v1/query), in seconds."""
    from realtime.consumer import realtime_group  # here: a broken realtime package fails this bench only

    n = EVENTS[scale]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    tenant = f"bench_fresh_{stamp.lower()}"
    write_key, read_key = f"wk_{tenant}", f"rk_{tenant}"
    rng = random.Random(5)
    check_redis(settings)
    with tempfile.TemporaryDirectory(prefix="bench-freshness-") as tmp_dir:
        tmp = Path(tmp_dir)
        bench = settings.model_copy(
            update={
                "topic_prefix": f"bench.freshness.{stamp}.",
                "redis_key_prefix": f"bench.freshness.{stamp}.",
                "warehouse_path": tmp / "warehouse",
                "warehouse_catalog": "",
                "warehouse_data_path": "",
                "warehouse_target": "duckdb",
                "tenants_db": tmp / "tenants.sqlite",
            }
        )
        topics = Topics.from_settings(bench)
        ensure_topics(bench)
        create_tenant_with_keys(TenantStore(bench.tenants_db), tenant, write_key, read_key)
        warehouse.connect(bench).close()  # an empty lake: the API needs one to start its engine
        env = service_env(bench)
        port = free_port()
        collector = Service("collector", ["collector", "--port", str(port), "--log-level", "warning"], env, tmp)
        realtime = Service("realtime", ["realtime"], env, tmp)
        services: list[Service] = []
        watcher: LiveWatcher | None = None
        try:
            services += [collector.start(), realtime.start()]
            api, api_url = start_api(bench, tmp, replica=False)
            services.append(api)
            collector.wait_http(f"http://127.0.0.1:{port}/readyz")
            sender = _Sender(f"http://127.0.0.1:{port}", write_key, stamp)
            with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {read_key}"}, timeout=30) as client:
                poller = _Poller(client, bench.api_max_rows)
                _ready_for_queries(bench, api, client, tmp / "dbt", poller)
                watcher = LiveWatcher(api_url, read_key).start()
                _warm_up(sender, watcher)
                if not realtime.alive():
                    raise realtime.failed("exited")
                sender.acks.clear()
                live, live_missed = _live_phase(sender, watcher, n, rng)
                watcher.close()
                watcher = None
                _query_phase(sender, poller, 2, rng)  # warm-up of the polled path, not timed
                query, query_missed = _query_phase(sender, poller, n, rng)
            sender.close()
        finally:
            if watcher is not None:
                watcher.close()
            for service in reversed(services):
                service.stop()
            _delete(bench, list(topics.all()), [realtime_group(bench)])
            delete_redis_keys(bench, f"{bench.redis_key_prefix}*", f"dd:{{{tenant}}}:*", f"rl:{{{tenant}}}:*")

    print(
        f"freshness bench: live p50 {percentile(live, 50) * 1000:.0f} ms, min {min(live) * 1000:.0f} ms,"
        f" max {max(live) * 1000:.0f} ms, missed {live_missed}; query p50 {percentile(query, 50) * 1000:.0f} ms,"
        f" max {max(query) * 1000:.0f} ms, missed {query_missed}; query sources {sorted(poller.sources)}"
    )
    for name, missed in (("live", live_missed), ("query", query_missed)):
        if missed > MAX_MISSED_SHARE * n:
            raise RuntimeError(f"{missed} of {n} events never showed in the {name} path within {EVENT_TIMEOUT_S} s")
    return [
        record("freshness_collector_ack_p99", percentile(sender.acks, 99) * 1000, "ms"),
        record("freshness_p50", percentile(live, 50), "s"),
        record("freshness_p99", percentile(live, 99), "s", target="<= 1"),
        record("freshness_query_p50", percentile(query, 50), "s"),
        record("freshness_query_p99", percentile(query, 99), "s", target="<= 2"),
    ]

"""Sends records to a collector as Segment /v1/batch requests, retrying on backpressure."""

from __future__ import annotations

import gzip
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx

from generator.segment import BATCH_LIMIT, batch_body, to_segment

RETRY_STATUSES = frozenset({429, 503})
MAX_ATTEMPTS = 10
BACKOFF_START_S, BACKOFF_MAX_S = 0.05, 5.0
RETRY_AFTER_MAX_S = 30.0


def retry_delay(attempt: int, retry_after: str | None) -> float:
    """Seconds to wait before the next attempt: Retry-After when given in seconds, else exponential backoff."""
    if retry_after is not None:
        try:
            return min(max(float(retry_after), 0.0), RETRY_AFTER_MAX_S)
        except ValueError:
            pass  # an HTTP-date: fall back to our own backoff
    return min(BACKOFF_START_S * 2**attempt, BACKOFF_MAX_S)


class HttpSink:
    """Batches of up to 100 messages per tenant, Basic auth with the tenant's write key, optional gzip."""

    name = "http"

    def __init__(
        self,
        base_url: str,
        write_keys: dict[str, str],
        *,
        client_clock: bool,
        gzip_body: bool = False,
        concurrency: int = 4,
        timeout: float = 10.0,
    ) -> None:
        self._url = base_url.rstrip("/") + "/v1/batch"
        self._write_keys = write_keys
        self._client_clock = client_clock
        self._gzip = gzip_body
        self._client = httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=concurrency))
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="generator-http")
        self._in_flight: deque[Future[None]] = deque()
        self._max_in_flight = 2 * concurrency
        self._buffers: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self.statuses: Counter[str] = Counter()

    def send(self, events: list[dict[str, Any]], invalid: dict[int, str]) -> None:
        # Invalid events go out as they are: rejecting them is the collector's job.
        for event in events:
            buffer = self._buffers.setdefault(event["tenant_id"], [])
            buffer.append(to_segment(event, self._client_clock))
            if len(buffer) >= BATCH_LIMIT:
                self._submit(event["tenant_id"], buffer)
                self._buffers[event["tenant_id"]] = []
        if self._client_clock:  # live: do not hold events back until a batch fills
            self.flush()

    def flush(self) -> None:
        for tenant, buffer in self._buffers.items():
            if buffer:
                self._submit(tenant, buffer)
        self._buffers = {}

    def _submit(self, tenant: str, messages: list[dict[str, Any]]) -> None:
        while len(self._in_flight) >= self._max_in_flight:
            self._in_flight.popleft().result()
        self._in_flight.append(self._pool.submit(self._post, self._write_keys.get(tenant, tenant), messages))

    def _post(self, write_key: str, messages: list[dict[str, Any]]) -> None:
        headers = {"Content-Type": "application/json"}
        for attempt in range(MAX_ATTEMPTS):
            body = batch_body(messages, time.time_ns() // 1000)
            if self._gzip:
                body = gzip.compress(body, compresslevel=5, mtime=0)
                headers["Content-Encoding"] = "gzip"
            try:
                response = self._client.post(self._url, content=body, headers=headers, auth=(write_key, ""))
            except httpx.TransportError:
                self._record("connection_error")
                time.sleep(retry_delay(attempt, None))
                continue
            self._record(str(response.status_code))
            if response.status_code not in RETRY_STATUSES:
                self._record("events_accepted" if response.is_success else "events_rejected", len(messages))
                return
            time.sleep(retry_delay(attempt, response.headers.get("Retry-After")))
        self._record("events_given_up", len(messages))

    def _record(self, status: str, n: int = 1) -> None:
        with self._lock:
            self.statuses[status] += n

    def close(self) -> dict[str, int]:
        self.flush()
        try:
            while self._in_flight:
                self._in_flight.popleft().result()
        finally:
            self._pool.shutdown(wait=True)
            self._client.close()
        return dict(self.statuses)

"""Produces a batch and waits for Kafka's acknowledgement of every record before the HTTP answer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from confluent_kafka import KafkaError, Producer

# Delivery reports are served by poll() on the event loop every this long while batches are in flight.
# A poller thread took the GIL back once per record (confluent-kafka runs each callback under the GIL),
# and under load every such hand-over waited for the busy event loop: acks took ~100 ms, not ~linger.
POLL_INTERVAL_S = 0.001


class KafkaUnavailable(RuntimeError):
    """Kafka did not acknowledge the batch in time; the collector answers 503 and the SDK retries."""


class _Batch:
    """The delivery callback of one batch: counts acknowledgements and resolves `done` at the last one."""

    # poll() runs only on the event loop's thread, so the count needs no lock and the future is set directly.

    __slots__ = ("done", "errors", "pending")

    def __init__(self, pending: int, done: asyncio.Future[None]) -> None:
        self.pending = pending
        self.done = done
        self.errors: list[KafkaError] = []

    def __call__(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self.errors.append(err)
        self.pending -= 1
        if self.pending == 0 and not self.done.done():
            self.done.set_result(None)


class BatchProducer:
    """One producer per process, used from one event loop; it polls for deliveries while batches wait."""

    def __init__(self, producer: Producer, timeout_s: float) -> None:
        self._producer = producer
        self._timeout = timeout_s
        self._waiting = 0  # batches awaiting their acknowledgements
        self._poller: asyncio.Task[None] | None = None

    async def _poll(self) -> None:
        while self._waiting:
            self._producer.poll(0)
            await asyncio.sleep(POLL_INTERVAL_S)

    async def send(self, records: list[tuple[str, str, bytes]]) -> float:
        """Produce (topic, key, value) records; returns seconds until all were acknowledged."""
        if not records:
            return 0.0
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        batch = _Batch(len(records), done)
        started = time.perf_counter()
        self._waiting += 1
        try:
            if self._poller is None or self._poller.done():
                self._poller = asyncio.create_task(self._poll())
            produce = self._producer.produce
            for topic, key, value in records:
                try:
                    produce(topic, value, key, on_delivery=batch)
                except BufferError:
                    # Local queue full: give deliveries a moment, then once more before giving up (→ 503).
                    self._producer.poll(0.5)
                    produce(topic, value, key, on_delivery=batch)
            await asyncio.wait_for(asyncio.shield(done), self._timeout)
        except (TimeoutError, BufferError) as exc:
            raise KafkaUnavailable(f"Kafka did not acknowledge the batch within {self._timeout:.0f} s") from exc
        finally:
            self._waiting -= 1
        if batch.errors:
            refused = f"{len(batch.errors)} of {len(records)} records: {batch.errors[0].str()}"
            raise KafkaUnavailable(f"Kafka refused {refused}")
        return time.perf_counter() - started

    def close(self, timeout_s: float = 10.0) -> int:
        """Flush what is queued (serving the last deliveries); returns the count of records still undelivered."""
        if self._poller is not None:
            self._poller.cancel()
        return int(self._producer.flush(timeout_s))

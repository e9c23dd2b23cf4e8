"""Produces a batch and waits for Kafka's acknowledgement of every record before the HTTP answer."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from confluent_kafka import KafkaError, Producer


class KafkaUnavailable(RuntimeError):
    """Kafka did not acknowledge the batch in time; the collector answers 503 and the SDK retries."""


class BatchProducer:
    """One producer per process; a thread serves delivery callbacks and resolves asyncio futures."""

    def __init__(self, producer: Producer, timeout_s: float) -> None:
        self._producer = producer
        self._timeout = timeout_s
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="kafka-delivery", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def send(self, records: list[tuple[str, str, bytes]]) -> float:
        """Produce (topic, key, value) records; returns seconds until all were acknowledged."""
        if not records:
            return 0.0
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        pending = len(records)
        errors: list[KafkaError] = []
        lock = threading.Lock()

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            nonlocal pending
            with lock:
                if err is not None:
                    errors.append(err)
                pending -= 1
                finished = pending == 0
            if finished:
                loop.call_soon_threadsafe(_resolve, done)

        started = time.perf_counter()
        try:
            for topic, key, value in records:
                self._produce(topic, key, value, on_delivery)
            await asyncio.wait_for(asyncio.shield(done), self._timeout)
        except (TimeoutError, BufferError) as exc:
            raise KafkaUnavailable(f"Kafka did not acknowledge the batch within {self._timeout:.0f} s") from exc
        if errors:
            raise KafkaUnavailable(f"Kafka refused {len(errors)} of {len(records)} records: {errors[0].str()}")
        return time.perf_counter() - started

    def _produce(self, topic: str, key: str, value: bytes, callback: Any) -> None:
        try:
            self._producer.produce(topic, key=key, value=value, on_delivery=callback)
        except BufferError:
            # Local queue full: give deliveries a moment, then once more before giving up (→ 503).
            self._producer.poll(0.5)
            self._producer.produce(topic, key=key, value=value, on_delivery=callback)

    def close(self, timeout_s: float = 10.0) -> int:
        """Flush what is queued and stop; returns the count of records still undelivered."""
        self._stop.set()
        self._poller.join(timeout=1.0)
        return int(self._producer.flush(timeout_s))


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)

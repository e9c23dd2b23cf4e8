"""Reading topics back in integration tests; the browser the browser tests drive."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

from analytics_core.clients import kafka_consumer, redis_client
from analytics_core.deadletter import DeadLetter
from analytics_core.registry import TopicSchemaStore
from analytics_core.serde import EventDeserializer
from analytics_core.settings import Settings
from analytics_core.topics import EVENTS_SUBJECT, Topics

if TYPE_CHECKING:
    from playwright.sync_api import Browser


def read_events(
    settings: Settings, keep: Callable[[dict[str, Any]], bool], expected: int, timeout: float = 20.0
) -> list:
    """Decoded events from tracking.events that `keep` selects, once `expected` of them arrived (or timeout)."""
    decode = EventDeserializer(TopicSchemaStore(settings).ids_for(EVENTS_SUBJECT))
    return _read(settings, Topics.from_settings(settings).events, lambda v: decode(v), keep, expected, timeout)


def read_dead_letters(
    settings: Settings, keep: Callable[[DeadLetter], bool], expected: int, timeout: float = 20.0
) -> list:
    return _read(settings, Topics.from_settings(settings).events_dlq, DeadLetter.from_json, keep, expected, timeout)


def _read(settings: Settings, topic: str, decode: Callable, keep: Callable, expected: int, timeout: float) -> list:
    consumer = kafka_consumer(settings, f"test.{uuid.uuid4().hex}")
    consumer.subscribe([topic])
    found: list = []
    deadline = time.monotonic() + timeout
    try:
        while len(found) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                if msg.error() is None:
                    value = decode(msg.value())
                    if keep(value):
                        found.append(value)
        # A little longer, so a test that expects N also notices an N+1st (a duplicate, say).
        for msg in consumer.consume(num_messages=1000, timeout=1.0):
            if msg.error() is None and keep(value := decode(msg.value())):
                found.append(value)
    finally:
        consumer.close()
    return found


def forget_redis_keys(settings: Settings, tag: str) -> None:
    """Delete what a module's collector left in Redis: its `test:<tag>:` prefix and its tenants' hash tags."""
    conn = redis_client(settings)
    try:
        keys = [*conn.scan_iter(match=f"test:{tag}:*"), *conn.scan_iter(match=f"*{tag}}}*")]
        if keys:
            conn.delete(*keys)
    finally:
        conn.close()


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's chromium, headless, driven by Playwright (no browser download: scripts/install-system-deps.sh
    installs it); a module-scoped fixture of each browser test module yields it."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is not installed: run scripts/install-system-deps.sh (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield browser
        finally:
            browser.close()

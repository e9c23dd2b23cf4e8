"""Session fixtures: the real Kafka and Redis stack, started once (or reused), and per-run isolation."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from analytics_core.clients import kafka_admin, redis_client
from analytics_core.settings import Settings, get_settings
from analytics_core.topics import Topics, ensure_topics

_STARTED_STACK = pytest.StashKey[bool]()  # the controller started the stack (and stops it)


def _is_xdist_controller(config: pytest.Config) -> bool:
    """Whether this process hands the tests to pytest-xdist workers (`pytest -n N`), rather than running them."""
    return not hasattr(config, "workerinput") and bool(getattr(config.option, "numprocesses", None))


def _start_stack_unless_healthy(settings: Settings) -> bool:
    """Start the stack when it is not running and healthy; whether it was started here (and so is to be stopped)."""
    from stack import manager

    if manager.is_healthy(settings):
        return False
    manager.up(settings)
    return True


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under xdist the workers share one stack: the controller starts it (when not running) before any worker
    asks, so two workers never race to start it, and stops it after the last one is done."""
    if _is_xdist_controller(session.config):
        session.config.stash[_STARTED_STACK] = _start_stack_unless_healthy(get_settings())


def pytest_sessionfinish(session: pytest.Session) -> None:
    if session.config.stash.get(_STARTED_STACK, False):
        from stack import manager

        manager.down(get_settings())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give each schemathesis operation's test its own node id: schemathesis names them
    `test_x[POST /v1/batch]` but leaves all of them the bare function's node id, and pytest-xdist
    schedules by node id, so it would run one operation of the document and drop the others (the fuzz
    modules' `test_the_fuzzer_reached_*` fail if that happens again)."""
    for item in items:
        original = getattr(item, "originalname", None)
        if not (isinstance(item, pytest.Function) and original and item.nodeid.endswith("::" + original)):
            continue
        suffix = item.name[len(original) :]
        if suffix:
            # Node ids have no public setter: pytest 9 keeps a parsed NodeId in `_id`, earlier ones a string.
            if hasattr(item, "_id"):
                item._id = type(item._id).parse(item.nodeid + suffix)
            else:
                item._nodeid = item.nodeid + suffix


@pytest.fixture(scope="session")
def stack_settings() -> Iterator[Settings]:
    """Settings of a healthy local stack; started here when not running, and stopped again after (under
    xdist the controller has started it: pytest_sessionstart)."""
    from stack import manager

    settings = get_settings()
    started = _start_stack_unless_healthy(settings)
    yield settings
    if started:
        manager.down(settings)


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def kafka_settings(stack_settings: Settings, run_id: str) -> Iterator[Settings]:
    """Settings whose topics carry a prefix unique to this test session; topics created, then deleted."""
    settings = stack_settings.model_copy(update={"topic_prefix": f"test.{run_id}."})
    ensure_topics(settings)
    yield settings
    delete_topics(settings)


@pytest.fixture()
def own_topics(kafka_settings: Settings) -> Iterator[Settings]:
    """Topics of one test alone, for tests that read a whole topic and must not see other tests' records."""
    settings = kafka_settings.model_copy(
        update={"topic_prefix": f"{kafka_settings.topic_prefix}{uuid.uuid4().hex[:8]}."}
    )
    ensure_topics(settings)
    yield settings
    delete_topics(settings)


def delete_topics(settings: Settings) -> None:
    admin = kafka_admin(settings)  # keep a reference: futures fail if the client is collected
    futures = admin.delete_topics(list(Topics.from_settings(settings).all()), operation_timeout=30)
    for future in futures.values():
        future.result()


@pytest.fixture()
def redis_conn(stack_settings: Settings) -> Iterator[redis.Redis]:
    conn = redis_client(stack_settings)
    yield conn
    conn.close()


@pytest.fixture()
def redis_prefix(redis_conn: redis.Redis) -> Iterator[str]:
    """A key prefix unique to one test; its keys are removed afterwards (never FLUSHDB a shared Redis)."""
    prefix = f"test:{uuid.uuid4().hex[:10]}:"
    yield prefix
    keys = list(redis_conn.scan_iter(match=prefix + "*", count=1000))
    if keys:
        redis_conn.delete(*keys)

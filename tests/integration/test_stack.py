"""`analytics stack up/down/status` against a real Kafka and Redis on test-only ports and folders."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Message, TopicPartition
from typer.testing import CliRunner

from analytics_core.clients import kafka_consumer, kafka_producer, redis_client
from analytics_core.settings import Settings
from analytics_core.topics import Topics
from stack import cli, jars, kafka, manager, procs
from stack.checks import StackError

pytestmark = pytest.mark.integration

DEFAULT_PORTS = {19092, 19093, 16379}


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports, never the default ones the session stack uses."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in DEFAULT_PORTS and port not in ports:
            ports.append(port)
    return ports


def make_settings(state_dir: Path, cache_dir: Path, **overrides: object) -> Settings:
    kafka_port, controller_port, redis_port = free_ports(3)
    values: dict[str, object] = {
        "kafka_bootstrap": f"127.0.0.1:{kafka_port}",
        "kafka_controller_port": controller_port,
        "redis_url": f"redis://127.0.0.1:{redis_port}/0",
        "state_dir": state_dir,
        "cache_dir": cache_dir,
        "stack_kafka": True,
        "stack_redis": True,
        "kafka_heap": "512m",
        "kafka_partitions": 2,
        "kafka_replication_factor": 1,
        "topic_prefix": "",
        "min_free_disk_mb": 100,
        "java_bin": "java",
        "mvn_bin": "mvn",
        "redis_server_bin": "redis-server",
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[arg-type,call-arg]


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of a stack of our own: free ports, an empty jar cache, a fresh state folder."""
    root = tmp_path_factory.mktemp("stack")
    settings = make_settings(root / "state", root / "cache")
    try:
        yield settings
    finally:
        manager.down(settings)


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return True
        time.sleep(0.1)
    return False


def round_trip_events(settings: Settings) -> None:
    topic = Topics.from_settings(settings).events
    payload = uuid.uuid4().hex.encode()
    producer = kafka_producer(settings)
    delivered: list[TopicPartition] = []

    def on_delivery(err: object, msg: Message) -> None:
        delivered.append(TopicPartition(topic, msg.partition() or 0, msg.offset() or 0))

    producer.produce(topic, payload, on_delivery=on_delivery)
    assert producer.flush(15) == 0 and delivered
    consumer = kafka_consumer(settings, f"test-stack-{payload.decode()}")
    consumer.assign(delivered)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None and msg.value() == payload:
                return
        pytest.fail(f"did not consume back the record produced to {topic}")
    finally:
        consumer.close()


@pytest.mark.slow
def test_up_status_down_from_empty_cache(
    own_stack: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = own_stack
    assert not manager.is_healthy(settings)
    assert not jars.is_cached(settings)
    manager.up(settings)
    assert jars.is_cached(settings)
    rows = {row.name: row for row in manager.status(settings)}
    assert {rows["kafka"].health, rows["redis"].health} == {"healthy"}
    pids = [rows["kafka"].pid, rows["redis"].pid]
    assert all(pids) and manager.is_healthy(settings)
    round_trip_events(settings)
    assert redis_client(settings).ping()

    capsys.readouterr()
    manager.up(settings)
    assert "already running" in capsys.readouterr().err
    assert [row.pid for row in manager.status(settings)] == pids

    # The same servers seen as external ones: up only checks them, status says external.
    external = settings.model_copy(update={"stack_kafka": False, "stack_redis": False, "state_dir": tmp_path})
    manager.up(external)
    assert {row.health for row in manager.status(external)} == {"external"}
    assert manager.is_healthy(external)

    manager.down(settings)
    for pid in pids:
        assert pid is not None and wait_gone(pid), f"pid {pid} still there after down"
    assert {row.health for row in manager.status(settings)} == {"stopped"}
    assert not list((settings.state_dir / "pids").glob("*.pid"))
    assert not manager.is_healthy(settings)


@pytest.mark.slow
def test_up_with_filled_cache_needs_no_maven(own_stack: Settings) -> None:
    if not jars.is_cached(own_stack):
        jars.fetch(own_stack, own_stack.state_dir / "logs" / "mvn.log")
    settings = own_stack.model_copy(update={"mvn_bin": "/nonexistent/mvn"})
    try:
        manager.up(settings)
        assert manager.is_healthy(settings)
        round_trip_events(settings)
    finally:
        manager.down(settings)
    assert {row.health for row in manager.status(settings)} == {"stopped"}


def assert_nothing_started(settings: Settings) -> None:
    assert not list((settings.state_dir / "pids").glob("*.pid"))


def test_missing_java(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state", tmp_path / "cache", java_bin=str(tmp_path / "no-java"))
    with pytest.raises(StackError) as err:
        manager.up(settings)
    assert "Java" in err.value.problem
    assert_nothing_started(settings)


def test_empty_cache_and_missing_maven(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state", tmp_path / "cache", mvn_bin=str(tmp_path / "no-mvn"))
    with pytest.raises(StackError) as err:
        manager.up(settings)
    assert "Maven" in err.value.problem
    assert_nothing_started(settings)


def test_missing_redis_server(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state", tmp_path / "cache", redis_server_bin=str(tmp_path / "nope"))
    with pytest.raises(StackError) as err:
        manager.up(settings)
    assert "redis-server" in err.value.problem
    assert "apt-get install redis-server" in err.value.fix
    assert_nothing_started(settings)


def test_kafka_port_taken(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state", tmp_path / "cache")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", settings.kafka_port))
        sock.listen()
        with pytest.raises(StackError) as err:
            manager.up(settings)
    assert str(settings.kafka_port) in err.value.problem
    assert "ANALYTICS_KAFKA_BOOTSTRAP" in err.value.fix
    assert_nothing_started(settings)
    assert {row.health for row in manager.status(settings)} == {"stopped"}


def test_cli_prints_error_without_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(tmp_path / "state", tmp_path / "cache", java_bin=str(tmp_path / "no-java"))
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    result = CliRunner().invoke(cli.app, ["up"])
    assert result.exit_code == 2
    assert "Java not found" in result.output
    assert "fix: " in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_cli_status_of_a_stopped_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(tmp_path / "state", tmp_path / "cache")
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    result = CliRunner().invoke(cli.app, ["status"])
    assert result.exit_code == 0
    assert "stopped" in result.output and str(settings.kafka_port) in result.output
    with contextlib.suppress(SystemExit):
        assert CliRunner().invoke(cli.app, ["down"]).exit_code == 0


def test_down_leaves_a_process_it_did_not_start(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state", tmp_path / "cache")
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        # A pid file that names a live process whose cmdline is not our broker's (e.g. a reused pid).
        pid_file = kafka.pid_path(settings)
        procs.write_record(pid_file, procs.ProcRecord(stranger.pid, ("kafka.Kafka",), str(tmp_path)))
        assert manager.status(settings)[0].health == "stopped"
        manager.down(settings)
        assert stranger.poll() is None, "down killed a process it did not start"
        assert not pid_file.exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_status_of_a_healthy_stack_started_elsewhere(
    stack_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second checkout (its own empty state folder) sees the running stack as healthy, and `down` leaves it."""
    settings = stack_settings.model_copy(update={"state_dir": tmp_path / "state"})
    rows = manager.status(settings)
    assert [(row.name, row.health, row.pid) for row in rows] == [("kafka", "healthy", None), ("redis", "healthy", None)]
    assert all("not started from this state folder" in row.detail for row in rows)
    assert manager.is_healthy(settings)

    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    result = CliRunner().invoke(cli.app, ["status"])
    assert result.exit_code == 0, result.output
    assert len(re.findall(r"\bhealthy\b", result.output)) == 2, result.output

    manager.down(settings)
    assert manager.is_healthy(stack_settings), "down from another state folder stopped the running stack"


def test_status_of_ports_taken_by_something_that_does_not_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path / "state", tmp_path / "cache")
    monkeypatch.setattr(manager, "STATUS_CHECK_TIMEOUT_S", 1.0)
    with socket.socket() as kafka_sock, socket.socket() as redis_sock:
        kafka_sock.bind(("127.0.0.1", settings.kafka_port))
        redis_sock.bind(("127.0.0.1", settings.redis_port))
        kafka_sock.listen()
        redis_sock.listen()
        rows = manager.status(settings)
        assert not manager.is_healthy(settings)
    assert [(row.health, row.detail) for row in rows] == [("stopped", "port in use by another process")] * 2

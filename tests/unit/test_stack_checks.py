"""Preflight checks of `analytics stack up`, fed with fake inputs."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from stack import checks
from stack.checks import StackError


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment (build 17.0.15+6)', 17),
        ('java version "1.8.0_392"\nJava(TM) SE Runtime Environment', 8),
        ("1.8.0_392", 8),
        ('openjdk version "21" 2023-09-19', 21),
        ('openjdk version "11.0.21" 2023-10-17', 11),
        ('openjdk version "25-ea" 2025-09-16', 25),
        ("openjdk 17.0.2 2022-01-18", 17),
        ("no version here", None),
    ],
)
def test_parse_java_version(output: str, major: int | None) -> None:
    assert checks.parse_java_version(output) == major


def test_java_17_passes() -> None:
    assert checks.check_java_version('openjdk version "17.0.15" 2025-04-15', "/usr/bin/java") == 17


@pytest.mark.parametrize("output", ['java version "1.8.0_392"', 'openjdk version "11.0.21"'])
def test_old_java_is_refused_with_fix(output: str) -> None:
    with pytest.raises(StackError) as err:
        checks.check_java_version(output, "/usr/bin/java")
    assert "Java" in err.value.problem and "17" in err.value.problem
    assert "ANALYTICS_JAVA_BIN" in err.value.fix


def test_unreadable_java_version() -> None:
    with pytest.raises(StackError, match="could not tell the Java version"):
        checks.check_java_version("garbage", "/x/java")


def test_missing_java(tmp_path: Path) -> None:
    with pytest.raises(StackError) as err:
        checks.check_java(str(tmp_path / "no-java"))
    assert "Java not found" in err.value.problem
    assert "openjdk-17" in err.value.fix


def test_missing_mvn(tmp_path: Path) -> None:
    with pytest.raises(StackError) as err:
        checks.check_mvn(str(tmp_path / "no-mvn"))
    assert "Maven" in err.value.problem
    assert "apt-get install maven" in err.value.fix


def test_missing_redis_server(tmp_path: Path) -> None:
    with pytest.raises(StackError) as err:
        checks.check_redis_server(str(tmp_path / "no-redis-server"))
    assert "redis-server" in err.value.problem
    assert "apt-get install redis-server" in err.value.fix


def test_binary_given_as_path_is_found() -> None:
    assert checks.find_binary(sys.executable) == sys.executable


@pytest.mark.parametrize("version", ["3.9.1", "2.8.0", "latest"])
def test_kafka_before_4_is_refused(version: str) -> None:
    with pytest.raises(StackError, match="not supported"):
        checks.check_kafka_version(version)


def test_kafka_4_is_accepted() -> None:
    checks.check_kafka_version("4.1.1")


def test_port_taken_by_a_listening_socket() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert checks.port_in_use(port)
        with pytest.raises(StackError) as err:
            checks.check_port_free(port, "Kafka", "ANALYTICS_KAFKA_BOOTSTRAP", "127.0.0.1:20092")
    assert str(port) in err.value.problem
    assert "ANALYTICS_KAFKA_BOOTSTRAP" in err.value.fix


def test_free_port_passes() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert not checks.port_in_use(port)
    checks.check_port_free(port, "Redis", "ANALYTICS_REDIS_URL", "redis://127.0.0.1:17379/0")


def test_disk_below_threshold(tmp_path: Path) -> None:
    with pytest.raises(StackError) as err:
        checks.check_disk(tmp_path, min_free_mb=1024, free_bytes=100 * 1024 * 1024)
    assert "100 MB free" in err.value.problem
    assert "ANALYTICS_MIN_FREE_DISK_MB" in err.value.fix


def test_disk_above_threshold_for_a_folder_not_made_yet(tmp_path: Path) -> None:
    assert checks.check_disk(tmp_path / "a" / "b", min_free_mb=1, free_bytes=2048 * 1024 * 1024) == 2048
    assert checks.check_disk(tmp_path / "a" / "b", min_free_mb=0) >= 0


def test_nearest_existing_parent(tmp_path: Path) -> None:
    assert checks.nearest_existing(tmp_path / "x" / "y") == tmp_path


def test_stack_error_carries_problem_and_fix() -> None:
    err = StackError("it broke", "do this")
    assert (err.problem, err.fix) == ("it broke", "do this")
    assert "do this" in str(err)

"""Preflight checks run before `stack up` starts anything, and the StackError they raise."""

from __future__ import annotations

import errno
import re
import shutil
import socket
import subprocess
from pathlib import Path

from analytics_core.settings import Settings

MIN_JAVA = 17
MIN_KAFKA_MAJOR = 4


class StackError(Exception):
    """A problem the user can fix: what went wrong and what to do about it."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem} (fix: {fix})")
        self.problem = problem
        self.fix = fix


def find_binary(name: str) -> str | None:
    """Absolute path of a program given as a name on PATH or as a path; None when missing."""
    return shutil.which(name)


def parse_java_version(text: str) -> int | None:
    """Major Java version from `java -version` output: 'openjdk version "17.0.15"' -> 17, '1.8.0_392' -> 8."""
    match = re.search(r'version "([^"]+)"', text) or re.search(r"\b(\d+(?:\.\d+)*(?:_\d+)?)\b", text)
    if not match:
        return None
    parts = re.split(r"[._+-]", match.group(1))
    try:
        major = int(parts[0])
        # Java 8 and older report themselves as 1.x.
        return int(parts[1]) if major == 1 and len(parts) > 1 else major
    except ValueError:
        return None


def check_java_version(output: str, java_path: str) -> int:
    """The major version from `java -version` output; StackError when unknown or older than 17."""
    major = parse_java_version(output)
    if major is None:
        raise StackError(
            f"could not tell the Java version of {java_path} from: {output.strip()[:200]!r}",
            f"point ANALYTICS_JAVA_BIN at a Java {MIN_JAVA}+ `java` (apt-get install openjdk-17-jre-headless)",
        )
    if major < MIN_JAVA:
        raise StackError(
            f"Java {major} found at {java_path}; Kafka 4 needs Java {MIN_JAVA} or newer",
            f"apt-get install openjdk-17-jre-headless, or set ANALYTICS_JAVA_BIN to a Java {MIN_JAVA}+ `java`",
        )
    return major


def check_java(java_bin: str) -> str:
    """Find Java and check it is 17 or newer; returns its path."""
    path = find_binary(java_bin)
    if path is None:
        raise StackError(
            f"Java not found: {java_bin!r} is not an executable or not on PATH (Kafka needs Java {MIN_JAVA}+)",
            "apt-get install openjdk-17-jre-headless, or set ANALYTICS_JAVA_BIN to the `java` to use",
        )
    try:
        proc = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"running `{path} -version` failed: {exc}", "check the Java install") from None
    # `java -version` prints to stderr.
    check_java_version(proc.stderr + proc.stdout, path)
    return path


def check_mvn(mvn_bin: str) -> str:
    """Path of Maven, needed only to fill an empty jar cache."""
    path = find_binary(mvn_bin)
    if path is None:
        raise StackError(
            f"Maven not found: {mvn_bin!r} is not on PATH, and the Kafka jars are not cached yet",
            "apt-get install maven (needed once, to download the Kafka jars), or set ANALYTICS_MVN_BIN",
        )
    return path


def check_redis_server(redis_server_bin: str) -> str:
    """Path of redis-server."""
    path = find_binary(redis_server_bin)
    if path is None:
        raise StackError(
            f"redis-server not found: {redis_server_bin!r} is not on PATH",
            "apt-get install redis-server, or set ANALYTICS_REDIS_SERVER_BIN to its path",
        )
    return path


def check_kafka_version(version: str) -> None:
    """The stack runs KRaft-only Kafka: 4.x or newer."""
    head = version.split(".", 1)[0]
    if not head.isdigit() or int(head) < MIN_KAFKA_MAJOR:
        raise StackError(
            f"Kafka version {version!r} is not supported; the stack runs Kafka {MIN_KAFKA_MAJOR}.x in KRaft mode",
            "set ANALYTICS_KAFKA_VERSION to a 4.x release such as 4.1.1",
        )


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something already listens on host:port (bind fails)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like Kafka and Redis do, so sockets of a stopped server in TIME_WAIT do not count as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def check_port_free(port: int, what: str, setting: str, example: str) -> None:
    """StackError naming the port and the setting to change when the port is taken."""
    if port_in_use(port):
        raise StackError(
            f"port {port} ({what}) is already in use by a process this stack did not start",
            f"stop that process (`ss -ltnp 'sport = :{port}'` shows it) or set {setting} to another port, "
            f"e.g. {setting}={example}",
        )


def nearest_existing(path: Path) -> Path:
    """The path itself or its closest existing parent (the state dir may not exist yet)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(path: Path, min_free_mb: int, free_bytes: int | None = None) -> int:
    """Free megabytes at path; StackError under min_free_mb. free_bytes overrides the measurement."""
    if free_bytes is None:
        free_bytes = shutil.disk_usage(nearest_existing(path)).free
    free_mb = free_bytes // (1024 * 1024)
    if free_mb < min_free_mb:
        raise StackError(
            f"only {free_mb} MB free at {nearest_existing(path)}; the stack wants at least {min_free_mb} MB",
            "free some disk space, move ANALYTICS_STATE_DIR / ANALYTICS_CACHE_DIR to a bigger disk, "
            "or lower ANALYTICS_MIN_FREE_DISK_MB",
        )
    return free_mb


def preflight(settings: Settings, kafka: bool, redis: bool, jars_cached: bool) -> dict[str, str]:
    """Every check before anything starts, so a failure leaves nothing half-running; returns the binaries."""
    check_disk(settings.state_dir, settings.min_free_disk_mb)
    found: dict[str, str] = {}
    if kafka:
        check_kafka_version(settings.kafka_version)
        found["java"] = check_java(settings.java_bin)
    if redis:
        found["redis"] = check_redis_server(settings.redis_server_bin)
    if kafka:
        port, ctl = settings.kafka_port, settings.kafka_controller_port
        check_port_free(port, "Kafka", "ANALYTICS_KAFKA_BOOTSTRAP", f"127.0.0.1:{port + 1000}")
        check_port_free(ctl, "Kafka controller", "ANALYTICS_KAFKA_CONTROLLER_PORT", str(ctl + 1000))
        if not jars_cached:
            # Maven and ~50 MB of jars are only needed while the cache is empty.
            check_disk(settings.cache_dir.expanduser(), settings.min_free_disk_mb)
            found["mvn"] = check_mvn(settings.mvn_bin)
    if redis:
        port = settings.redis_port
        check_port_free(port, "Redis", "ANALYTICS_REDIS_URL", f"redis://127.0.0.1:{port + 1000}/0")
    return found

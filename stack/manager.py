"""`stack up / down / status`: start, stop and inspect the local Kafka and Redis."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException
from rich.console import Console

from analytics_core.settings import Settings
from analytics_core.topics import ensure_topics
from stack import jars, kafka, procs, redis_server
from stack.checks import StackError, port_in_use, preflight

HEALTH_TIMEOUT_S = 60.0
EXTERNAL_TIMEOUT_S = 10.0
STATUS_CHECK_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ServiceStatus:
    """One row of `stack status`; health is healthy, unhealthy, stopped or external."""

    name: str
    pid: int | None
    port: int
    health: str
    data_dir: Path | None
    detail: str = ""


@dataclass(frozen=True)
class _Service:
    name: str
    label: str
    managed: bool
    host: str
    port: int
    address: str
    pid_path: Path
    data_dir: Path
    logs: tuple[Path, ...]
    check: Callable[[float], bool]
    grace: float
    setting: str


def _services(settings: Settings) -> list[_Service]:
    kafka_host = settings.kafka_bootstrap.split(",")[0].rsplit(":", 1)[0]
    return [
        _Service(
            "kafka",
            "Kafka",
            settings.stack_kafka,
            kafka_host,
            settings.kafka_port,
            settings.kafka_bootstrap,
            kafka.pid_path(settings),
            kafka.data_dir(settings),
            (kafka.log_path(settings), kafka.out_path(settings)),
            lambda t: kafka.round_trip(settings, t),
            30.0,
            "KAFKA",
        ),
        _Service(
            "redis",
            "Redis",
            settings.stack_redis,
            settings.redis_host,
            settings.redis_port,
            settings.redis_url,
            redis_server.pid_path(settings),
            redis_server.data_dir(settings),
            (redis_server.log_path(settings),),
            lambda t: redis_server.ping(settings, t),
            10.0,
            "REDIS",
        ),
    ]


def _console() -> Console:
    return Console(stderr=True)


def _lock(settings: Settings) -> Path:
    return settings.state_dir.absolute() / "pids" / "stack.lock"


def _log_tails(service: _Service, since: dict[Path, int]) -> str:
    """What the service logged since it was started (or lately): the lines that explain a failure."""
    parts = []
    for log in service.logs:
        lines = procs.tail(log, 15, since.get(log, 0)).splitlines()
        if lines:
            parts.append(f"--- last lines of {log} ---\n" + "\n".join(line[:300] for line in lines))
    return "\n".join(parts) or f"(nothing in {', '.join(map(str, service.logs))})"


def _healthy(s: _Service, timeout: float) -> bool:
    # A refused connection is cheap to see; only then is the slower real check worth running.
    return procs.port_open(s.host, s.port) and s.check(timeout)


def _wait_healthy(services: list[_Service], timeout: float, since: dict[Path, int]) -> None:
    """Poll each service until healthy; fail fast when a process we started exits."""
    for s in services:
        limit = timeout if s.managed else min(timeout, EXTERNAL_TIMEOUT_S)
        deadline = time.monotonic() + limit
        while not _healthy(s, min(10.0, max(1.0, deadline - time.monotonic()))):
            if s.managed and procs.running_pid(s.pid_path) is None:
                raise StackError(
                    f"{s.label} exited while starting.\n{_log_tails(s, since)}",
                    "read the log above; fix the cause and run `analytics stack up` again",
                )
            if time.monotonic() >= deadline:
                if not s.managed:
                    where = "KAFKA_BOOTSTRAP" if s.name == "kafka" else "REDIS_URL"
                    raise StackError(
                        f"external {s.label} at {s.address} is not healthy",
                        f"start it or point ANALYTICS_{where} at it; or set "
                        f"ANALYTICS_STACK_{s.setting}=true to let the stack run one",
                    )
                raise StackError(
                    f"{s.label} did not become healthy within {limit:.0f} s.\n{_log_tails(s, since)}",
                    "read the log above; `analytics stack down` then `up` to retry, or give it longer with --timeout",
                )
            time.sleep(0.3)


def _start(settings: Settings, service: _Service, found: dict[str, str]) -> int:
    if service.name == "redis":
        return redis_server.start(settings, found["redis"])
    if not jars.is_cached(settings):
        with _console().status(f"Downloading Kafka {settings.kafka_version} jars with Maven (once)…"):
            jars.fetch(settings, settings.state_dir.absolute() / "logs" / "mvn.log")
    return kafka.start(settings, found["java"], jars.libs_dir(settings))


def _stop_started(services: list[_Service], started: set[str]) -> None:
    for s in services:
        pid = procs.running_pid(s.pid_path)
        if s.name in started and pid is not None:
            procs.stop(pid, s.grace)
        if s.name in started:
            s.pid_path.unlink(missing_ok=True)


def up(settings: Settings, timeout: float = HEALTH_TIMEOUT_S) -> None:
    """Start what is not running, wait until Kafka and Redis are healthy, create the topics."""
    console = _console()
    with procs.locked(_lock(settings)):
        services = _services(settings)
        to_start = [s for s in services if s.managed and procs.running_pid(s.pid_path) is None]
        names = {s.name for s in to_start}
        found = preflight(settings, "kafka" in names, "redis" in names, jars.is_cached(settings)) if names else {}
        since = {log: procs.size_of(log) for s in to_start for log in s.logs}
        started: set[str] = set()
        try:
            for s in to_start:
                s.pid_path.unlink(missing_ok=True)
                started.add(s.name)
                _start(settings, s, found)
            with console.status("Waiting for Kafka and Redis to become healthy…"):
                _wait_healthy(services, timeout, since)
            created = ensure_topics(settings)
        except KafkaException as exc:
            _stop_started(services, started)
            raise StackError(f"creating the Kafka topics failed: {exc}", "check the Kafka log") from None
        except BaseException:
            # Never leave a half-started stack behind.
            _stop_started(services, started)
            raise
    for s in services:
        how = "started" if s.name in started else "already running" if s.managed else "external"
        console.print(f"{s.label} {how}, healthy at {s.address}")
    if created:
        console.print(f"created topics: {', '.join(created)}")


def down(settings: Settings) -> None:
    """Stop by pid what `up` started (SIGTERM, then SIGKILL after a grace period); nothing else."""
    console = _console()
    with procs.locked(_lock(settings)):
        for s in _services(settings):
            record = procs.read_record(s.pid_path)
            if record is None:
                console.print(f"{s.label}: not running")
            elif procs.is_ours(record):
                with console.status(f"Stopping {s.label} (pid {record.pid})…"):
                    killed = procs.stop(record.pid, s.grace)
                console.print(f"{s.label}: stopped pid {record.pid}" + (" (killed after SIGTERM)" if killed else ""))
            else:
                console.print(f"{s.label}: pid {record.pid} is no longer ours; removed the stale pid file")
            s.pid_path.unlink(missing_ok=True)


def status(settings: Settings) -> list[ServiceStatus]:
    """One ServiceStatus per service, health-checked now.

    A managed service without a pid file whose address answers is healthy (pid unknown, detail
    saying it was not started from this state folder), like `is_healthy` sees it; a taken port
    that does not answer is stopped.
    """
    rows = []
    for s in _services(settings):
        pid = procs.running_pid(s.pid_path)
        if pid is not None:
            health = "healthy" if _healthy(s, STATUS_CHECK_TIMEOUT_S) else "unhealthy"
            rows.append(ServiceStatus(s.name, pid, s.port, health, s.data_dir))
        elif not s.managed:
            reach = "reachable" if _healthy(s, STATUS_CHECK_TIMEOUT_S) else "unreachable"
            rows.append(ServiceStatus(s.name, None, s.port, "external", None, f"{reach} at {s.address}"))
        elif port_in_use(s.port) and _healthy(s, STATUS_CHECK_TIMEOUT_S):
            # Another checkout's stack (or another process) serves the configured address: usable
            # here, as `is_healthy` says, but not ours, so `down` from this state folder leaves it.
            rows.append(
                ServiceStatus(
                    s.name, None, s.port, "healthy", None, "not started from this state folder; down leaves it"
                )
            )
        else:
            note = "port in use by another process" if port_in_use(s.port) else ""
            rows.append(ServiceStatus(s.name, None, s.port, "stopped", s.data_dir, note))
    return rows


def is_healthy(settings: Settings) -> bool:
    """True when Kafka and Redis at the configured addresses answer their health checks, whoever runs them."""
    return all(_healthy(s, STATUS_CHECK_TIMEOUT_S) for s in _services(settings))

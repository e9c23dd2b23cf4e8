"""CPU seconds spent by the processes a benchmark involves (its own, the stack's servers, a service it
started), read from /proc, so a record can say where the CPU of a timed part went."""

from __future__ import annotations

import os
from pathlib import Path

from analytics_core.settings import Settings
from stack import kafka as stack_kafka
from stack import redis_server as stack_redis
from stack.procs import running_pid


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far, all its threads (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def stack_servers(settings: Settings) -> dict[str, list[int]]:
    """{"redis": [pid], "kafka": [pid]} for the servers `analytics stack up` runs here; an external
    server (ANALYTICS_KAFKA_BOOTSTRAP …) is left out, since its CPU cannot be read."""
    found = {}
    for name, path in (("redis", stack_redis.pid_path(settings)), ("kafka", stack_kafka.pid_path(settings))):
        pid = running_pid(path)
        if pid is not None:
            found[name] = [pid]
    return found


class CpuMeter:
    """CPU seconds each named group of processes spent between start() and stop()."""

    def __init__(self, parties: dict[str, list[int]]) -> None:
        self.parties = parties
        self._start: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        return {name: sum(map(cpu_seconds, pids)) for name, pids in self.parties.items()}

    def start(self) -> None:
        self._start = self._now()

    def stop(self) -> dict[str, float]:
        return {name: seconds - self._start[name] for name, seconds in self._now().items()}

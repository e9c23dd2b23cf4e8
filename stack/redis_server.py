"""The stack's Redis: started in the foreground mode, detached by us, checked with PING."""

from __future__ import annotations

from pathlib import Path

import redis

from analytics_core.clients import redis_client
from analytics_core.settings import Settings
from stack.procs import spawn

NAME = "redis"


def data_dir(settings: Settings) -> Path:
    return settings.state_dir.absolute() / "redis"


def log_path(settings: Settings) -> Path:
    return settings.state_dir.absolute() / "logs" / "redis.log"


def pid_path(settings: Settings) -> Path:
    return settings.state_dir.absolute() / "pids" / "redis.pid"


def command(settings: Settings, redis_server: str) -> list[str]:
    return [
        redis_server,
        "--bind",
        "127.0.0.1",
        "--port",
        str(settings.redis_port),
        "--dir",
        str(data_dir(settings)),
        # We detach it ourselves so the pid we record is the server's.
        "--daemonize",
        "no",
        "--logfile",
        "",
        "--save",
        "60 1000",
        "--appendonly",
        "no",
        # The collector's dedupe sets hold a window of a tenant's event ids each; free them in the
        # background when they expire instead of blocking every client meanwhile.
        "--lazyfree-lazy-expire",
        "yes",
    ]


def start(settings: Settings, redis_server: str) -> int:
    """Start redis-server detached; returns its pid."""
    data_dir(settings).mkdir(parents=True, exist_ok=True)
    # redis-server rewrites its cmdline to "<argv0> 127.0.0.1:<port>", so match on that.
    markers = [Path(redis_server).name, f"127.0.0.1:{settings.redis_port}"]
    return spawn(command(settings, redis_server), data_dir(settings), log_path(settings), pid_path(settings), markers)


def ping(settings: Settings, timeout: float = 2.0) -> bool:
    """Healthy means the server answers PING."""
    client = redis_client(settings, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()

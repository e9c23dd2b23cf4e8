"""An advisory writer lock between processes: `fcntl.flock` on a file, with who holds it written inside.

The warehouse's writers (the loader's commits, every dbt build, the replay's rewind) take it around
their writes, so that with the SQLite DuckLake catalog their commits never overlap: SQLite refuses a
second writer's lock upgrade at once ("database is locked", duckdb/ducklake issue 1309), and a dbt
build that loses its commit to a loader committing every 2 s loses it on every retry.
`analytics_core.warehouse.writer_lock(settings, holder)` derives the file from the settings.

- The kernel releases a flock when its file is closed: on leaving the `with` block (an exception
  included) and when the process dies, however it dies. The descriptor is not inherited by
  subprocesses (dbt's, say): it is opened close-on-exec and subprocess closes the others anyway.
- Two descriptors of the file exclude each other even in one process (threads of one process queue
  like processes). A thread already holding the lock takes it again at once (re-entrant per thread).
- A waiter polls (every 50 ms) instead of blocking in the kernel, so that it can log who it waits for
  once the wait is longer than `warn_after_s`, and give up after `timeout` (`timeout=0`: try once).
- Waiters queue: a writer first takes a second lock, the turnstile (`<file>.queue`), then the lock
  itself, then lets the turnstile go. A holder that releases the lock and wants it again at once (dbt
  builds run back to back) finds the turnstile held by the writer waiting for the lock, and comes
  after it: the loader is not starved by a stream of builds, nor a build by the loader's commits.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)
WARN_AFTER_S = 5.0  # a wait longer than this is logged, naming the holder; then once a minute
POLL_S = 0.05
_local = threading.local()


@dataclass(frozen=True)
class Held:
    """The lock, taken: its file and how long this holder waited for it."""

    path: Path
    waited_s: float


class WriterLockBusy(TimeoutError):
    """The lock was still held by another writer when the timeout ran out."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"writer lock {path} is held by {holder}")
        self.path, self.holder = path, holder


def holder_of(path: Path) -> str:
    """Who holds the lock, as its holder wrote it into the file: `pid 123 (analytics loader) on host since …`."""
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info.get("pid"):
        return "an unknown process"  # it has not written itself in yet, or an old version holds it
    return f"pid {info['pid']} ({info.get('holder', '?')}) on {info.get('host', '?')} since {info.get('since', '?')}"


def _held_here() -> dict[str, int]:
    held: dict[str, int] | None = getattr(_local, "held", None)
    if held is None:
        held = _local.held = {}
    return held


@contextmanager
def hold(path: Path, holder: str, timeout: float | None = None, warn_after_s: float = WARN_AFTER_S) -> Iterator[Held]:
    """Hold the lock file `path` for the block, waiting for it as long as another process or thread holds it.

    `holder` names this writer in the file and in the logs. `timeout` (seconds; None = wait for ever,
    0 = try once) raises WriterLockBusy.
    """
    key = str(path.absolute())
    held = _held_here()
    if key in held:  # this thread holds it already
        held[key] += 1
        try:
            yield Held(path, 0.0)
        finally:
            held[key] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        turnstile = os.open(turnstile_path(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            waited = _acquire([turnstile, fd], path, holder, timeout, warn_after_s)
        finally:
            os.close(turnstile)  # the next waiter may queue now
        _write_holder(fd, holder)
        held[key] = 1
        try:
            yield Held(path, waited)
        finally:
            del held[key]
            try:
                os.ftruncate(fd, 0)  # a stale name must not be reported once it is released
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def turnstile_path(path: Path) -> Path:
    return path.with_name(path.name + ".queue")


def _acquire(fds: list[int], path: Path, holder: str, timeout: float | None, warn_after_s: float) -> float:
    """Lock each of `fds` in turn (the turnstile, then the lock); the seconds it took."""
    started = time.monotonic()
    warn_at = warn_after_s
    warned = False
    taken = 0
    while taken < len(fds):
        try:
            fcntl.flock(fds[taken], fcntl.LOCK_EX | fcntl.LOCK_NB)
            taken += 1
            continue
        except BlockingIOError:
            pass
        waited = time.monotonic() - started
        if timeout is not None and waited >= timeout:
            raise WriterLockBusy(path, holder_of(path))
        if waited >= warn_at:
            log.warning(
                "%s has waited %.0f s for the writer lock %s, held by %s", holder, waited, path, holder_of(path)
            )
            warn_at, warned = waited + 60.0, True
        time.sleep(POLL_S if timeout is None else min(POLL_S, max(timeout - waited, 0.0)))
    waited = time.monotonic() - started
    if warned:
        log.warning("%s took the writer lock %s after %.1f s", holder, path, waited)
    return waited


def _write_holder(fd: int, holder: str) -> None:
    info = {
        "pid": os.getpid(),
        "holder": holder,
        "host": socket.gethostname(),
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    data = json.dumps(info).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)

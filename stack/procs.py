"""Processes the stack starts: pid files, ownership checks, detached start and stop by pid."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

# Popen objects of the children this Python process started, so stop() can reap them (no zombies).
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class ProcRecord:
    """What a pid file holds: the pid, strings its cmdline must contain, and the folder it runs in."""

    pid: int
    markers: tuple[str, ...]
    cwd: str


def write_record(path: Path, record: ProcRecord) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record)))
    tmp.replace(path)


def read_record(path: Path) -> ProcRecord | None:
    """The record in a pid file; None when missing or unreadable."""
    try:
        data = json.loads(path.read_text())
        return ProcRecord(pid=int(data["pid"]), markers=tuple(data["markers"]), cwd=str(data["cwd"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None:
        if child.poll() is not None:
            _children.pop(pid, None)
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def is_alive(pid: int) -> bool:
    """True for a running process; zombies count as gone."""
    _reap(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        # The state letter follows the parenthesised command name, which may itself hold spaces.
        if stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X"):
            return True
        # A JVM's main thread can exit before its shutdown hooks finish: then only the leader is a zombie.
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def is_ours(record: ProcRecord) -> bool:
    """The pid is alive and still the process we started (pids get reused): cmdline and folder match."""
    if not is_alive(record.pid):
        return False
    line = cmdline(record.pid)
    if not all(marker in line for marker in record.markers):
        return False
    try:
        return os.readlink(f"/proc/{record.pid}/cwd") == record.cwd
    except OSError:
        return False


def running_pid(pid_path: Path) -> int | None:
    """Pid of our process recorded in pid_path, if it is still running."""
    record = read_record(pid_path)
    return record.pid if record is not None and is_ours(record) else None


def spawn(argv: Sequence[str], cwd: Path, log_path: Path, pid_path: Path, markers: Sequence[str]) -> int:
    """Start argv detached in its own session, stdout and stderr appended to log_path; record the pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cwd = Path(os.path.realpath(cwd))
    # stop() ends a child with SIGTERM, which must not be ignored there: an ignored signal stays ignored across
    # exec (a JVM then never runs its shutdown), and this process may have been started with it ignored, or
    # have it ignored meanwhile (Dagster points SIGTERM at SIGINT's handler: SIG_IGN under `nohup ... &`).
    restore_term = signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    with open(log_path, "ab") as log:
        child = subprocess.Popen(
            list(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            preexec_fn=_default_sigterm if restore_term else None,
        )
    _children[child.pid] = child
    write_record(pid_path, ProcRecord(pid=child.pid, markers=tuple(markers), cwd=str(cwd)))
    return child.pid


def _default_sigterm() -> None:
    """In the child, before exec: SIGTERM's default action (terminate) instead of an inherited SIG_IGN."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        # Our children lead their own process group; signal the group so helpers die too.
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return True
        time.sleep(0.1)
    return not is_alive(pid)


def stop(pid: int, grace: float) -> bool:
    """SIGTERM, wait up to grace seconds, then SIGKILL; True when it had to be killed."""
    if not is_alive(pid):
        return False
    _signal(pid, signal.SIGTERM)
    if _wait_gone(pid, grace):
        _children.pop(pid, None)
        return False
    _signal(pid, signal.SIGKILL)
    _wait_gone(pid, 10.0)
    _children.pop(pid, None)
    return True


def tail(path: Path, lines: int = 20, since: int = 0) -> str:
    """The last lines of a log file written after byte offset since; "" when missing."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            # A rotated log restarts at zero; then everything in it is new.
            start = since if since <= size else 0
            fh.seek(max(start, size - 64 * 1024))
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@contextlib.contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """Exclusive lock so two `stack up`/`down` on one state dir do not race."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)

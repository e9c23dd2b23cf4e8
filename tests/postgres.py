"""A throwaway PostgreSQL server on a free loopback port, for tests of the DuckLake PostgreSQL catalog.

The binaries (initdb, pg_ctl, postgres) are looked up on PATH, in /usr/local/bin and in
/usr/lib/postgresql/<version>/bin (Debian's package), newest version first; scripts/install-system-deps.sh
installs them on Debian. initdb refuses to run as root, so as root the server runs as the `postgres`
user (or `nobody` when there is none) and owns its temporary directory.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.servers import free_port

PROGRAMS = ("initdb", "pg_ctl", "postgres")
INSTALL_HINT = "run `bash scripts/install-system-deps.sh` as root (Debian: apt-get install postgresql)"


def _version_key(folder: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", folder.parent.name)) or (0,)


def find_bin_dir() -> Path | None:
    """A folder holding initdb, pg_ctl and postgres (symlinks resolved), or None."""
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    candidates.append(Path("/usr/local/bin"))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    for folder in candidates:
        if all(os.access(folder / name, os.X_OK) for name in PROGRAMS):
            return folder
    return None


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged account to run PostgreSQL as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    pytest.fail("running as root and neither a `postgres` nor a `nobody` user exists: initdb refuses to run as root")


def _as_user(user: pwd.struct_passwd | None, command: list[str]) -> list[str]:
    if user is None:
        return command
    if shutil.which("runuser"):
        return ["runuser", "-u", user.pw_name, "--", *command]
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", *command]


def _run(user: pwd.struct_passwd | None, command: list[str], cwd: Path, stdin: str | None = None) -> None:
    done = subprocess.run(
        _as_user(user, command), cwd=cwd, input=stdin, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


@contextmanager
def postgres_server(dbname: str = "lake") -> Iterator[str]:
    """The libpq DSN of database `dbname` on a fresh PostgreSQL (127.0.0.1, free port) while the block runs."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.fail(
            f"PostgreSQL (initdb, pg_ctl, postgres) not found on PATH, /usr/local/bin or /usr/lib/postgresql: "
            f"{INSTALL_HINT}"
        )
    user = _server_user()
    base = Path(tempfile.mkdtemp(prefix="analytics-pg-"))  # under /tmp: the server user can reach it
    data, log = base / "data", base / "server.log"
    port = free_port()
    try:
        if user is not None:
            os.chown(base, user.pw_uid, user.pw_gid)
        _run(
            user,
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            base,
        )
        # Single-user mode creates the database without needing a client program.
        _run(
            user,
            [str(bin_dir / "postgres"), "--single", "-D", str(data), "postgres"],
            base,
            stdin=f'CREATE DATABASE "{dbname}";\n',
        )
        options = f"-h 127.0.0.1 -p {port} -k '' -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        try:
            _run(
                user,
                [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "30", "start"],
                base,
            )
        except RuntimeError as exc:
            server_log = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"{exc}\nserver log:\n{server_log}") from None
        try:
            yield f"host=127.0.0.1 port={port} user=postgres dbname={dbname}"
        finally:
            _run(user, [str(bin_dir / "pg_ctl"), "-D", str(data), "stop", "-m", "fast", "-w", "-t", "30"], base)
    finally:
        shutil.rmtree(base, ignore_errors=True)

"""The warehouse writer lock between real processes: a second writer waits and is told who holds it; the lock
is released when the holder's block raises and when the holder is killed; threads queue, a holder re-enters.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from analytics_core import warehouse
from analytics_core.dbt import writes_warehouse
from analytics_core.settings import Settings
from analytics_core.writer_lock import WriterLockBusy, hold, holder_of
from loaders.offsets import commit_batch
from loaders.sinks import open_sink
from tests.unit.raw_rows import raw_rows

CTX = multiprocessing.get_context("spawn")


def _hold_for(path: Path, seconds: float, held: Any) -> None:
    with hold(path, "writer A"):
        held.set()
        time.sleep(seconds)


def _back_to_back(path: Path, holds: Any, held: Any) -> None:
    for _ in range(3):  # as dbt builds run one after the other
        with hold(path, "writer A"):
            started = time.time()
            held.set()
            time.sleep(0.5)
        holds.put((started, time.time()))


def _raise_then_live(path: Path, released: Any) -> None:
    try:
        with hold(path, "writer A"):
            raise RuntimeError("the build failed")
    except RuntimeError:
        released.set()
    time.sleep(60)  # alive: the lock went with the exception, not with the process


def _start(target: Any, *args: Any) -> tuple[Any, Any]:
    event = CTX.Event()
    proc = CTX.Process(target=target, args=(*args, event), daemon=True)
    proc.start()
    assert event.wait(30), "the child did not take the lock"
    return proc, event


def test_a_second_process_waits_for_the_first_and_logs_who_holds_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "catalog.sqlite.writer-lock"
    first, _ = _start(_hold_for, path, 1.5)
    assert f"pid {first.pid} (writer A)" in holder_of(path)
    with pytest.raises(WriterLockBusy, match=f"pid {first.pid}"), hold(path, "writer B", timeout=0):
        pass
    caplog.set_level(logging.WARNING, logger="analytics_core.writer_lock")
    started = time.monotonic()
    with hold(path, "writer B", warn_after_s=0.3) as held:
        assert f"pid {os.getpid()} (writer B)" in holder_of(path)
    assert 0.8 < held.waited_s <= time.monotonic() - started
    waits = [r.getMessage() for r in caplog.records if "writer B has waited" in r.getMessage()]
    assert waits and f"held by pid {first.pid} (writer A)" in waits[0]
    assert holder_of(path) == "an unknown process"  # released: the file names no holder any more
    first.join(10)


def test_a_waiting_writer_goes_before_a_holder_that_takes_the_lock_again(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    holds = CTX.Queue()
    first, _ = _start(_back_to_back, path, holds)
    with hold(path, "writer B"):
        mine = time.time()
        time.sleep(0.2)
    a = [holds.get(timeout=10) for _ in range(3)]
    first.join(10)
    assert a[0][1] <= mine < a[1][0]  # between A's first and second holds, not after all three


def test_the_lock_is_released_when_the_block_raises(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    proc, _ = _start(_raise_then_live, path)
    try:
        assert proc.is_alive()
        with hold(path, "writer B", timeout=0.5) as held:
            assert held.waited_s < 0.5
    finally:
        proc.kill()
        proc.join(10)


def test_the_lock_is_released_when_its_holder_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    proc, _ = _start(_hold_for, path, 60.0)
    with pytest.raises(WriterLockBusy), hold(path, "writer B", timeout=0.2):
        pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    with hold(path, "writer B", timeout=2.0):
        assert f"pid {os.getpid()} (writer B)" in holder_of(path)


def test_threads_queue_and_a_thread_that_holds_it_takes_it_again(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    order: list[str] = []

    def take() -> None:
        with hold(path, "thread"):
            order.append("thread")

    with hold(path, "main"), hold(path, "main again", timeout=0):  # re-entrant in one thread
        other = threading.Thread(target=take)
        other.start()
        time.sleep(0.3)
        order.append("main")
    other.join(5)
    assert order == ["main", "thread"]


def test_only_a_sqlite_catalog_has_a_writer_lock_and_read_only_dbt_commands_skip_it(lake: Settings) -> None:
    assert warehouse.writer_lock_path(lake) == (lake.warehouse_path / "catalog.sqlite.writer-lock").absolute()
    assert warehouse.writer_lock_path(lake.model_copy(update={"warehouse_catalog": "postgres:dbname=x"})) is None
    assert warehouse.writer_lock_path(lake.model_copy(update={"warehouse_target": "bigquery"})) is None
    with warehouse.writer_lock(lake.model_copy(update={"warehouse_target": "bigquery"}), "x") as none:
        assert none is None
    assert writes_warehouse(["build", "--select", "x"]) and writes_warehouse(["--log-level", "debug", "run"])
    assert writes_warehouse(["retry"]) and writes_warehouse(["run-operation", "m"]) and writes_warehouse([])
    assert not writes_warehouse(["parse"]) and not writes_warehouse(["docs", "generate"])
    assert not writes_warehouse(["compile", "-s", "x"]) and not writes_warehouse(["ls"])


def test_a_loader_commit_waits_for_the_lock_and_compaction_skips(lake: Settings) -> None:
    sink = open_sink(lake, "t", commit_batch=commit_batch)
    path = warehouse.writer_lock_path(lake)
    assert path is not None
    done, rows = threading.Event(), raw_rows(5, 0, 0)
    dbt, _ = _start(_hold_for, path, 1.0)  # another process (dbt, say) holds the lock for a second
    committing = threading.Thread(target=lambda: (sink.commit(rows, {}, {0: 5}), done.set()))
    committing.start()
    time.sleep(0.3)
    assert not done.is_set()  # the commit waits while the other process holds the lock
    assert sink.compact() is False  # compaction does not wait (nor queue before the commit): skipped
    committing.join(10)
    dbt.join(10)
    assert done.is_set() and sink.lock_wait_s >= 0.3
    assert sink.stored_offsets() == {0: 5}
    assert sink.compact() is True
    sink.close()

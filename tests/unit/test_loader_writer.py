"""The writer thread commits beside the caller, one batch at a time, and hands every failure back."""

from __future__ import annotations

import threading

import pyarrow as pa
import pytest

from loaders.writer import BatchWriter, PendingBatch


def batch(n: int = 1) -> PendingBatch:
    return PendingBatch([], pa.table({"x": list(range(n))}), {}, {0: n})


def test_commit_runs_on_its_own_thread_while_the_caller_goes_on() -> None:
    release, ran_on = threading.Event(), []

    def commit(b: PendingBatch) -> None:
        ran_on.append(threading.get_ident())
        assert release.wait(10)

    writer = BatchWriter(commit)
    first = batch()
    writer.submit(first)
    assert writer.pending is first and not writer.done()  # the caller was not held up by the commit
    with pytest.raises(RuntimeError, match="in flight"):
        writer.submit(batch())  # one batch in flight at most: the next needs this one's result
    release.set()
    assert writer.wait() == (first, None)
    assert ran_on and ran_on[0] != threading.get_ident()
    assert writer.pending is None and writer.wait() is None
    writer.close()


def test_a_failed_commit_is_handed_back_not_swallowed() -> None:
    def commit(b: PendingBatch) -> None:
        raise OSError("disk full")

    writer = BatchWriter(commit)
    failed = batch()
    writer.submit(failed)
    done = writer.wait()
    assert done is not None
    assert done[0] is failed and isinstance(done[1], OSError) and "disk full" in str(done[1])
    writer.close()

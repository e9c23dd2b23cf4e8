"""Process-wide garbage-collector settings of the services: `tune_gc` for the HTTP servers (the collector and
the query API), `fewer_gc_passes` around the consume loops (the warehouse loader and the realtime consumer).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

# A request allocates thousands of containers that live until its answer (~30 requests in flight), so
# the default gen-0 threshold (700) ran ~8 collections a request that only promoted live objects:
# ~15 % of the server's CPU (docs/BENCHMARKS.md, collector). Garbage here is freed by refcounting.
GC_THRESHOLDS = (20_000, 50, 100)
# Kafka messages are GC-tracked and a batch keeps 100k+ of them alive: at Python's gen-0 threshold
# (700) the garbage collector ran ~150 times a batch, its full passes walking every live message,
# ~10% of the loader's time (measured with gc.callbacks). About once a batch is enough for the few
# cycles here.
GC_GEN0_THRESHOLD = 100_000


def tune_gc() -> None:
    """Freeze what start-up loaded and collect gen 0 less often (the collector and the query API)."""
    # The modules, compiled schemas and regexes loaded so far live as long as the process: freezing
    # them keeps the (rare) full collections from walking them again.
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


@contextlib.contextmanager
def fewer_gc_passes() -> Iterator[None]:
    """Raise the gen-0 threshold while a consume loop runs (process-wide), restore it afterwards."""
    thresholds = gc.get_threshold()
    gc.set_threshold(max(GC_GEN0_THRESHOLD, thresholds[0]), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)

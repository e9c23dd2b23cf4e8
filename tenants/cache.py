"""KeyCache: key -> tenant for the collector and API hot paths, a dict lookup instead of a query per request."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable

from tenants.models import Tenant, hash_key
from tenants.store import KeyIndex, TenantStore

log = logging.getLogger(__name__)


class KeyCache:
    """Every tenant's key hashes in memory, reloaded from the store at most once per ttl.

    A tenant created (or a key rotated or revoked) by the CLI takes effect within ttl_seconds. Unknown keys
    are answered from the dict too, so a flood of bad keys never reaches SQLite.
    """

    def __init__(
        self, store: TenantStore, ttl_seconds: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._store = store
        self._ttl = ttl_seconds
        self._clock = clock
        self._index: KeyIndex | None = None
        self._loaded_at = 0.0
        self._reload_lock = threading.Lock()

    def tenant_for_write_key(self, key: str) -> Tenant | None:
        """The tenant whose write key this is, or None; O(1) between reloads."""
        return self._current().by_write_hash.get(hash_key(key))

    def tenant_for_read_key(self, key: str) -> Tenant | None:
        """The tenant whose read key this is, or None; O(1) between reloads."""
        return self._current().by_read_hash.get(hash_key(key))

    def refresh(self) -> None:
        """Reload now, whatever the age of the snapshot."""
        with self._reload_lock:
            self._reload()

    def _current(self) -> KeyIndex:
        index = self._index
        if index is not None and self._clock() - self._loaded_at < self._ttl:
            return index
        if index is None:
            with self._reload_lock:
                if self._index is None:  # another thread may have loaded it while this one waited
                    self._reload()
        # One thread reloads; the others keep answering from the old snapshot instead of queueing behind it.
        elif self._reload_lock.acquire(blocking=False):
            try:
                self._reload()
            finally:
                self._reload_lock.release()
        assert self._index is not None  # set by the first _reload, or it raised
        return self._index

    def _reload(self) -> None:
        try:
            index = self._store.key_index()
        except sqlite3.Error as err:
            if self._index is None:
                raise
            # Keep serving the last snapshot rather than failing every request; retry after another ttl.
            log.warning("tenant keys not reloaded from %s, serving the previous snapshot: %s", self._store.path, err)
            self._loaded_at = self._clock()
            return
        self._index = index
        self._loaded_at = self._clock()

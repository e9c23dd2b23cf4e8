"""What the in-memory replica reports: ReplicaStatus (its snapshot, since when it is known current, its last
change), ReplicaNotReady (no rollups to copy yet, or a lake that cannot be read) and iso() for the times in both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from api.engine.versions import Versions


class ReplicaNotReady(RuntimeError):
    """The lake has no rollups to copy yet (not built), or could not be read."""


@dataclass(frozen=True)
class ReplicaStatus:
    """What the replica holds: the lake snapshot it equals, and since when that is known to be the newest."""

    ready: bool
    snapshot_id: int | None = None
    snapshot_time: datetime | None = None  # commit time of that lake snapshot
    synced_at: float | None = None  # wall clock (epoch s) when the lake's newest snapshot was last seen to be it
    error: str | None = None  # why the last refresh failed; None after a good one
    rows: dict[str, int] = field(default_factory=dict)
    refreshes: int = 0  # refreshes that changed the replica (the initial load is the first)
    changes: dict[str, tuple[int, int]] = field(default_factory=dict)  # last change: table -> (removed, added)
    copied: tuple[str, ...] = ()  # tables the last change copied whole rather than from the change feed
    # What the replica's data is, for the answer cache: the lake snapshot it equals, the last change of each
    # watched table and every tenant's watermarks (api/engine/versions.py); None until the first load.
    versions: Versions | None = None

    def age_s(self, now: float | None = None) -> float | None:
        """Seconds since the replica was last known to equal the lake."""
        return None if self.synced_at is None else max((now or time.time()) - self.synced_at, 0.0)


def iso(t: float | datetime | None) -> str:
    if t is None:
        return "never"
    if isinstance(t, datetime):
        return t.astimezone(UTC).isoformat(timespec="seconds")
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")

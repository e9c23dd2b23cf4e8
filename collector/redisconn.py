"""A redis.asyncio connection whose commands are packed in C by hiredis.

redis-py's asyncio connection packs every command in Python (a join per argument), whatever parser is
installed; the sync client already packs with hiredis when it is installed. A request's rate-limit and
dedupe script calls carry ~100 keys and arguments each, so this was ~6-8 % of the collector's CPU
(py-spy). Packing is byte-for-byte the same for the str/bytes/int/float arguments the collector sends
(str as UTF-8, the client's default encoding; floats as repr).
"""

from __future__ import annotations

from typing import Any

import redis.asyncio
from redis.connection import HIREDIS_AVAILABLE, HiredisRespSerializer


class HiredisPackedConnection(redis.asyncio.Connection):
    """redis.asyncio.Connection packing commands like the sync client does with hiredis installed."""

    _serializer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        return self._serializer.pack(*args)


def connection_class() -> type[redis.asyncio.Connection]:
    """HiredisPackedConnection when hiredis is importable, else redis-py's own connection."""
    return HiredisPackedConnection if HIREDIS_AVAILABLE else redis.asyncio.Connection

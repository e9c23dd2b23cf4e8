"""Redis commands packed in bulk: the many elements of SADD and SMISMEMBER built with numpy.

A batch sends Redis a few hundred thousand user keys and event ids. Packed one Python string at a
time (redis-py's pipeline) they cost more than all the rest of the batch; here the RESP bulk strings
of a whole Arrow column are written into one buffer at once, and a command takes a slice of it.
"""

from __future__ import annotations

from typing import Any

import hiredis
import numpy as np
import pyarrow as pa
import redis
from redis.exceptions import ResponseError

_MULTI = hiredis.pack_command(("MULTI",))
_EXEC = hiredis.pack_command(("EXEC",))
_TABLE_SIZE = 10_000
_HEADERS = np.zeros((_TABLE_SIZE, 8), dtype=np.uint8)
for _length in range(_TABLE_SIZE):
    _text = b"$%d\r\n" % _length
    _HEADERS[_length, : len(_text)] = np.frombuffer(_text, dtype=np.uint8)


def _header_bytes(lengths: np.ndarray) -> np.ndarray:
    """`$<length>\r\n` of each length as a zero-padded row of bytes (a table look-up for the usual lengths)."""
    out = _HEADERS[np.minimum(lengths, _TABLE_SIZE - 1)]
    long = np.flatnonzero(lengths >= _TABLE_SIZE)
    if long.size:
        out = np.pad(out, ((0, 0), (0, 16)))
        for i in long.tolist():
            text = b"$%d\r\n" % lengths[i]
            out[i, : len(text)] = np.frombuffer(text, dtype=np.uint8)
    return out


class Elements:
    """RESP bulk strings (`$<length>\r\n<bytes>\r\n`) as one Arrow large_binary array, element by element.

    Built once per distinct string (`pack`), then gathered by `take` for each command that sends them
    (`take`): Arrow copies the bytes, no Python object per element.
    """

    def __init__(self, packed: pa.LargeBinaryArray) -> None:
        self.packed = packed
        n = len(packed)
        _, offsets_buf, data_buf = packed.buffers()
        self.starts = np.frombuffer(offsets_buf, dtype=np.int64)[packed.offset : packed.offset + n + 1]
        self._data = memoryview(data_buf) if data_buf is not None else memoryview(b"")

    @classmethod
    def pack(cls, values: pa.Array) -> Elements:
        """The bulk strings of an array of strings (no nulls)."""
        arr = values.cast(pa.large_string()) if values.type != pa.large_string() else values
        if arr.null_count:
            raise ValueError("cannot send null strings to Redis")
        n = len(arr)
        if not n:
            return cls(pa.array([], pa.large_binary()))
        _, offsets_buf, data_buf = arr.buffers()
        offsets = np.frombuffer(offsets_buf, dtype=np.int64)[arr.offset : arr.offset + n + 1]
        lengths = np.diff(offsets)
        header = _header_bytes(lengths)  # (n, 8): `$<length>\r\n`, zero-padded
        header_len = (header != 0).sum(axis=1)
        starts = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(header_len + lengths + 2, out=starts[1:])
        out = np.empty(int(starts[-1]), dtype=np.uint8)
        framing = np.zeros(len(out), dtype=bool)  # every byte that is not part of a value
        begin = starts[:-1]
        shortest = int(header_len.min())
        for j in range(int(header_len.max())):
            rows = np.flatnonzero(header_len > j) if j >= shortest else slice(None)
            out[begin[rows] + j] = header[rows, j]
            framing[begin[rows] + j] = True
        data_end = begin + header_len + lengths
        out[data_end], out[data_end + 1] = ord("\r"), ord("\n")
        framing[data_end] = framing[data_end + 1] = True
        if offsets[-1] > offsets[0]:
            out[~framing] = np.frombuffer(data_buf, dtype=np.uint8)[offsets[0] : offsets[-1]]
        buffers = [None, pa.py_buffer(starts), pa.py_buffer(out)]
        return cls(pa.LargeBinaryArray.from_buffers(pa.large_binary(), n, buffers))

    def take(self, indices: np.ndarray) -> Elements:
        """Elements indices[0], indices[1], ... in that order."""
        return Elements(self.packed.take(pa.array(indices, pa.int64())))

    def filter(self, mask: np.ndarray) -> Elements:
        return Elements(self.packed.filter(pa.array(mask, pa.bool_())))

    def __len__(self) -> int:
        return len(self.packed)

    def slice(self, start: int, end: int) -> memoryview:
        """The packed elements start..end-1, back to back."""
        return self._data[int(self.starts[start]) : int(self.starts[end])]


class Commands:
    """Commands to send in one write: a MULTI/EXEC transaction, or a plain pipeline.

    With `keep_errors`, a transaction's commands that Redis refused while executing it (a data error:
    HINCRBY past 64 bits, WRONGTYPE) stay in the results as ResponseError and are listed in `errors`;
    Redis has applied every other command of the transaction. Errors while queueing (EXECABORT: nothing
    applied) are raised either way.
    """

    def __init__(self, transaction: bool, keep_errors: bool = False) -> None:
        self.transaction = transaction
        self.keep_errors = keep_errors and transaction
        self._parts: list[bytes | memoryview] = [_MULTI] if transaction else []
        self._count = 0
        self._calls: list[tuple[Any, ...]] = []  # each command's arguments (without packed elements), for logs
        self.errors: list[tuple[int, ResponseError]] = []  # (position, error) of refused commands

    def __len__(self) -> int:
        return self._count

    def add(self, *args: Any) -> int:
        """Queue a command; returns its position in the results."""
        self._parts.append(hiredis.pack_command(args))
        self._calls.append(args)
        self._count += 1
        return self._count - 1

    def add_with_elements(self, name: str, key: str, elements: memoryview, count: int) -> int:
        """Queue `name key <count packed elements>` (SADD, SMISMEMBER ...); returns its position."""
        key_bytes = key.encode()
        head = b"*%d\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (count + 2, len(name), name.encode(), len(key_bytes), key_bytes)
        self._parts.append(head)
        self._parts.append(elements)
        self._calls.append((name, key, f"<{count} elements>"))
        self._count += 1
        return self._count - 1

    def describe(self, position: int) -> str:
        """The command at `position` in words (arguments shortened), for a log line."""
        words = [a.decode(errors="replace") if isinstance(a, bytes) else str(a) for a in self._calls[position]]
        return " ".join(w if len(w) <= 200 else w[:200] + "…" for w in words)

    def parts(self) -> list[bytes | memoryview]:
        return [*self._parts, _EXEC] if self.transaction else self._parts

    @property
    def replies_expected(self) -> int:
        return self._count + 2 if self.transaction else self._count  # MULTI's OK, the QUEUEDs, EXEC's array

    def results(self, replies: list[Any]) -> list[Any]:
        """Each command's result from this block's replies; raises the first error reply."""
        if self.transaction:
            for reply in replies[1:-1]:
                if isinstance(reply, ResponseError):
                    raise reply  # refused while queueing: Redis aborted the EXEC
            if not isinstance(replies[-1], list):
                raise redis.RedisError(f"unexpected reply to EXEC: {replies[-1]!r}")
            replies = replies[-1]
        for at, reply in enumerate(replies):
            if isinstance(reply, ResponseError):
                if not self.keep_errors:
                    raise reply
                self.errors.append((at, reply))
        return replies

    def execute(self, client: redis.Redis) -> list[Any]:
        """Send, wait and return the results."""
        return Exchange(client, [self]).results()[0]


class Exchange:
    """Blocks of commands sent in one write on one connection; their replies are read by `results()`.

    In between the caller is free to work (decode the next batch) while Redis executes them.
    """

    def __init__(self, client: redis.Redis, blocks: list[Commands]) -> None:
        self.blocks = blocks
        self._pool = client.connection_pool
        self._conn: Any = self._pool.get_connection()
        try:
            self._conn.send_packed_command([b"".join(part for block in blocks for part in block.parts())])
        except BaseException:
            self.abandon()
            raise

    def results(self) -> list[list[Any]]:
        """Per block, its commands' results; raises the first error reply (after reading them all)."""
        if self._conn is None:
            raise redis.RedisError("the replies of this exchange were already read or abandoned")
        try:
            replies = _read_replies(self._conn, sum(b.replies_expected for b in self.blocks))
        except BaseException:
            self.abandon()
            raise
        self._pool.release(self._conn)
        self._conn = None
        out, at = [], 0
        for block in self.blocks:
            out.append(block.results(replies[at : at + block.replies_expected]))
            at += block.replies_expected
        return out

    def abandon(self) -> None:
        """Drop the connection: it may hold unread replies, so it must never be handed out again."""
        if self._conn is not None:
            self._conn.disconnect()
            self._pool.release(self._conn)
            self._conn = None


def _read_replies(conn: Any, n: int) -> list[Any]:
    """The next n replies on a connection, parsed by hiredis straight from its socket.

    redis-py's read_response costs ~2 us of Python per reply; a transaction of a batch has thousands,
    most of them QUEUED. The connection holds nothing unread when a command is sent (every exchange
    on it is read to its end), so reading the socket directly sees exactly these replies.
    """
    reader = hiredis.Reader(replyError=ResponseError)
    sock = conn._sock
    replies: list[Any] = []
    while len(replies) < n:
        reply = reader.gets()
        if reply is False:
            data = sock.recv(1 << 16)
            if not data:
                raise redis.ConnectionError("Redis closed the connection while replying")
            reader.feed(data)
        else:
            replies.append(reply)
    return replies

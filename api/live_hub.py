"""The live streams of one API process, sharing Redis: the hub behind `GET /api/v1/live`.

One pub/sub connection carries the updates channel of every tenant with an open stream (SUBSCRIBE
when its first stream opens, UNSUBSCRIBE when its last one closes). Each such tenant has a feed, a
task that reads the counters once per update or heartbeat for all the tenant's streams and hands
the frames to each of them; the reads go through a small bounded pool. Redis therefore sees a fixed
number of connections per process however many streams are open.

Each stream holds a slot: at most `max_streams_per_key` per read key (429 above) and `max_streams`
per process (503 above); closing the stream, however it ends, frees it. Open streams re-check their
read key every `key_check_s` against the tenant key cache: a rotated or revoked key, or a deleted
tenant, ends them with an `error` frame within the cache's refresh time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Hashable
from typing import Any

import redis
import redis.asyncio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from analytics_core.settings import Settings
from api.live import LiveReader, iso, sse_frame
from tenants import KeyCache, hash_key

log = logging.getLogger("api.live")

KEY_INVALID = "the read key is no longer valid (rotated or revoked, or the tenant was deleted); the stream ends"
# The reader pool's connections wait this long for each other; a slow Redis shows as `unavailable`.
POOL_WAIT_S = 5.0


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))


class LiveLimitError(Exception):
    """A stream refused because a limit is reached; `status` is the HTTP answer (429 per key, 503 per process)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class LiveStream:
    """One client's stream: its slot in the hub and the frames waiting to be sent to it.

    Waiting frames are coalesced, so a slow client holds at most one `counters` frame and one
    `correction` per minute (the newest), never a growing queue.
    """

    def __init__(self, hub: LiveHub, tenant_id: str, group: str | None) -> None:
        self.tenant_id = tenant_id
        self.needs_initial = True  # no counters yet: the feed reads them at once for this stream
        self.told_down = False  # sent `unavailable` since its last counters
        self._hub = hub
        self._group = group
        self._pending: list[tuple[str, str, Hashable]] = []
        self._final: tuple[str, str] | None = None
        self._ended = False
        self._ready = asyncio.Event()
        self.released = False

    def put(self, event: str, data: str, slot: Hashable) -> None:
        """Queue a frame; one waiting in the same slot is replaced (fresh counters also supersede `unavailable`)."""
        drop = {slot, "unavailable"} if slot == "counters" else {slot}
        self._pending = [item for item in self._pending if item[2] not in drop]
        self._pending.append((event, data, slot))
        self._ready.set()

    def end(self, event: str | None = None, data: dict[str, Any] | None = None) -> None:
        """Finish the stream, with one last frame if given; the slot is freed now."""
        if event is not None and data is not None:
            self._final = (event, _json(data))
        self._ended = True
        self._ready.set()
        self.release()

    def release(self) -> None:
        """Leave the hub and free the slot; idempotent."""
        if not self.released:
            self.released = True
            self._hub._release(self, self._group)

    async def frames(self) -> AsyncGenerator[bytes, None]:
        """The SSE bytes: `retry`, then every frame handed over by the feed, each with the next id."""
        yield b"retry: 2000\n\n"
        seq = 0
        try:
            while True:
                await self._ready.wait()
                self._ready.clear()
                while self._pending and not self._ended:
                    event, data, _ = self._pending.pop(0)
                    seq += 1
                    yield sse_frame(event, data, seq)
                if self._ended:
                    if self._final is not None:
                        seq += 1
                        yield sse_frame(*self._final, seq)
                    return
        finally:
            self.release()


class _Feed:
    """The streams of one tenant: one subscription, one read per update or heartbeat, frames fanned out."""

    def __init__(self, hub: LiveHub, tenant_id: str) -> None:
        self.hub = hub
        self.tenant_id = tenant_id
        self.channel = hub.reader.keys.updates(tenant_id)
        self.streams: set[LiveStream] = set()
        self.wake = asyncio.Event()
        self.corrections: set[int] = set()
        self.updated_at: float | None = None
        self.updated = False
        self.resync = False  # the subscription was lost or a read failed: send everyone fresh counters
        self.task = asyncio.create_task(self._run(), name=f"live feed {tenant_id}")

    def note_update(self, data: bytes | str) -> None:
        """A message from the realtime consumer: remembered, answered by the feed's next read."""
        try:
            update = json.loads(data)
            self.corrections.update(int(m) for m in update.get("corrections", ()))
            applied_at = float(update.get("applied_at", 0.0))
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("live update of %s not understood (%s); answered with fresh counters", self.tenant_id, exc)
            applied_at = 0.0
        self.updated_at = max(self.updated_at or 0.0, applied_at)
        self.updated = True
        self.wake.set()

    async def _run(self) -> None:
        hub = self.hub
        next_beat: float | None = None  # the next heartbeat, or after a failure the next attempt
        retry_at: float | None = None  # set while Redis failed: no attempt for all streams before it
        while True:
            timeout = None if next_beat is None else max(0.0, next_beat - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)
            self.wake.clear()
            now = time.monotonic()
            joiners = [s for s in self.streams if s.needs_initial]
            if retry_at is not None and now < retry_at:
                # Redis just failed: a new stream learns it at once (one try), the others wait for retry_at.
                broadcast, joiners = False, [s for s in joiners if not s.told_down]
            else:
                broadcast = (next_beat is not None and now >= next_beat) or self.updated or self.resync
            if not broadcast and not joiners:
                continue
            corrections: list[int] = []
            updated_at: float | None = None
            if broadcast:  # taken now: updates arriving during the read stay for the next round
                corrections, updated_at = sorted(self.corrections), self.updated_at
                self.corrections, self.updated_at, self.updated, self.resync = set(), None, False, False
            try:
                await hub._subscribe(self.channel)  # before the read, so no update falls in between
                rows = await hub.reader.minutes(hub.client, self.tenant_id, corrections) if corrections else []
                snapshot = await hub.reader.snapshot(hub.client, self.tenant_id)
            except (redis.RedisError, OSError) as exc:
                log.warning("live stream without Redis: %s", exc)
                down = _json({"error": f"realtime layer unreachable: {exc}", "retry_s": hub.interval_s})
                for stream in list(self.streams) if broadcast else joiners:
                    stream.put("unavailable", down, "unavailable")
                    stream.told_down = True
                self.corrections.update(corrections)  # sent once Redis answers again
                if updated_at is not None:
                    self.updated_at = max(self.updated_at or 0.0, updated_at)
                self.resync = True  # everyone gets fresh counters once Redis answers
                if broadcast or retry_at is None:
                    retry_at = next_beat = time.monotonic() + hub.interval_s
                continue
            hub.reads += 1
            if broadcast:
                retry_at = None
                if updated_at is not None:
                    snapshot["updated_at"] = iso(updated_at)
                counters = _json(snapshot)
                fixed = [(row["minute"], _json(row)) for row in rows]
                for stream in list(self.streams):
                    for minute, data in fixed:
                        stream.put("correction", data, ("correction", minute))
                    stream.put("counters", counters, "counters")
                    stream.needs_initial = stream.told_down = False
                next_beat = time.monotonic() + hub.interval_s
            else:
                counters = _json(snapshot)
                for stream in joiners:
                    stream.put("counters", counters, "counters")
                    stream.needs_initial = stream.told_down = False
                if next_beat is None:
                    next_beat = time.monotonic() + hub.interval_s


class _KeyGroup:
    """The open streams of one read key, with the key itself to re-check it (never logged or shown)."""

    def __init__(self, key: str, tenant_id: str) -> None:
        self.key = key
        self.tenant_id = tenant_id
        self.streams: set[LiveStream] = set()

    def __repr__(self) -> str:
        return f"_KeyGroup(tenant_id={self.tenant_id!r}, streams={len(self.streams)})"


class LiveHub:
    """Every live stream of one process: shared subscription and reads, per-key and total limits, key checks."""

    def __init__(
        self,
        reader: LiveReader,
        client: redis.asyncio.Redis,
        interval_s: float,
        *,
        max_streams: int | None = None,
        max_streams_per_key: int | None = None,
        key_tenant: Callable[[str], str | None] | None = None,
        key_check_s: float = 1.0,
        owns_client: bool = False,
    ) -> None:
        self.reader = reader
        self.client = client
        self.interval_s = interval_s
        self.max_streams = max_streams
        self.max_streams_per_key = max_streams_per_key
        self.key_check_s = key_check_s
        self.reads = 0  # counter reads done for all streams (tests and operations)
        self._key_tenant = key_tenant
        self._owns_client = owns_client
        self._count = 0
        self._feeds: dict[str, _Feed] = {}
        self._by_channel: dict[str, _Feed] = {}
        self._groups: dict[str, _KeyGroup] = {}
        self._pubsub: Any = None
        self._subscribed: set[str] = set()
        self._pubsub_lock = asyncio.Lock()
        self._has_pubsub = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    def for_api(cls, settings: Settings, reader: LiveReader, tenants: KeyCache) -> LiveHub:
        """The API's hub: its own bounded Redis pool (one connection for the subscription, the rest for reads)."""
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=settings.api_live_redis_connections,
            timeout=POOL_WAIT_S,
            socket_timeout=2.0,
            socket_connect_timeout=1.0,
            client_name="analytics-api-live",
        )

        def key_tenant(key: str) -> str | None:
            found = tenants.tenant_for_read_key(key)
            return found.tenant_id if found is not None else None

        return cls(
            reader,
            redis.asyncio.Redis.from_pool(pool),
            settings.api_live_interval_s,
            max_streams=settings.api_live_max_streams,
            max_streams_per_key=settings.api_live_max_streams_per_key,
            key_tenant=key_tenant,
            key_check_s=settings.api_live_key_check_s,
            owns_client=True,
        )

    @property
    def open_streams(self) -> int:
        return self._count

    def open(self, tenant_id: str, key: str | None = None) -> LiveStream:
        """A new stream of the tenant, authenticated by `key`; LiveLimitError when a limit is reached."""
        if self._closed:
            raise LiveLimitError(503, "the API is shutting down")
        if self.max_streams is not None and self._count >= self.max_streams:
            raise LiveLimitError(
                503,
                f"this API process already serves its limit of {self.max_streams} live streams "
                "(ANALYTICS_API_LIVE_MAX_STREAMS); try again later",
            )
        group_id = hash_key(key) if key is not None else None
        group = self._groups.get(group_id) if group_id is not None else None
        limit = self.max_streams_per_key
        if group is not None and limit is not None and len(group.streams) >= limit:
            raise LiveLimitError(
                429,
                f"this read key already has {len(group.streams)} live streams open, the limit of {limit} "
                "per key (ANALYTICS_API_LIVE_MAX_STREAMS_PER_KEY); close one or try again later",
            )
        stream = LiveStream(self, tenant_id, group_id)
        if key is not None and group_id is not None:
            if group is None:
                group = self._groups[group_id] = _KeyGroup(key, tenant_id)
            group.streams.add(stream)
        feed = self._feeds.get(tenant_id)
        if feed is None:
            feed = self._feeds[tenant_id] = _Feed(self, tenant_id)
            self._by_channel[feed.channel] = feed
        feed.streams.add(stream)
        feed.wake.set()
        self._count += 1
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="live updates")
        if self._watcher is None and self._key_tenant is not None:
            self._watcher = asyncio.create_task(self._watch_keys(), name="live key checks")
        return stream

    def _release(self, stream: LiveStream, group_id: str | None) -> None:
        self._count -= 1
        if group_id is not None and (group := self._groups.get(group_id)) is not None:
            group.streams.discard(stream)
            if not group.streams:
                del self._groups[group_id]
        feed = self._feeds.get(stream.tenant_id)
        if feed is None:
            return
        feed.streams.discard(stream)
        if not feed.streams:  # the tenant's last stream: stop reading and listening for it
            del self._feeds[stream.tenant_id]
            del self._by_channel[feed.channel]
            feed.task.cancel()
            if not self._closed:
                self._background(self._unsubscribe(feed.channel))

    def _background(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _subscribe(self, channel: str) -> None:
        if channel in self._subscribed:
            return
        async with self._pubsub_lock:
            if channel in self._subscribed:
                return
            if self._pubsub is None:
                self._pubsub = self.client.pubsub()
            try:
                await self._pubsub.subscribe(channel)
            except BaseException:
                await self._drop_pubsub()
                raise
            self._subscribed.add(channel)
            self._has_pubsub.set()

    async def _unsubscribe(self, channel: str) -> None:
        async with self._pubsub_lock:
            # A stream of the tenant may have opened again meanwhile: then its feed keeps the channel.
            if channel in self._by_channel or channel not in self._subscribed or self._pubsub is None:
                return
            self._subscribed.discard(channel)
            try:
                await self._pubsub.unsubscribe(channel)
            except (redis.RedisError, OSError) as exc:
                log.warning("live updates: unsubscribe failed, reconnecting: %s", exc)
                await self._drop_pubsub()

    async def _drop_pubsub(self) -> None:
        """Close the subscription (under the lock); every feed subscribes again and resends counters."""
        pubsub, self._pubsub = self._pubsub, None
        self._subscribed.clear()
        self._has_pubsub.clear()
        if pubsub is not None:
            with contextlib.suppress(redis.RedisError, OSError):
                await pubsub.aclose()
        for feed in self._feeds.values():
            feed.resync = True
            feed.wake.set()

    async def _listen(self) -> None:
        """Routes each published update to its tenant's feed; a lost connection makes every feed resubscribe."""
        while True:
            await self._has_pubsub.wait()
            pubsub = self._pubsub
            if pubsub is None:
                await asyncio.sleep(0.05)
                continue
            try:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis gone or the connection closed under the read: start over
                log.warning("live updates subscription lost: %s", exc)
                async with self._pubsub_lock:
                    if self._pubsub is pubsub:
                        await self._drop_pubsub()
                await asyncio.sleep(0.05)
                continue
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"]
            feed = self._by_channel.get(channel.decode() if isinstance(channel, bytes) else channel)
            if feed is not None:
                feed.note_update(message["data"])

    async def _watch_keys(self) -> None:
        """Every key_check_s: the read key of each open stream must still belong to the stream's tenant."""
        while True:
            await asyncio.sleep(self.key_check_s)
            groups = list(self._groups.items())
            if not groups:
                continue
            try:  # in a thread: a key cache reload reads SQLite
                found = await asyncio.to_thread(self._tenants_of, [group.key for _, group in groups])
            except Exception:
                log.exception("live streams: read keys not re-checked")
                continue
            for (group_id, group), tenant_id in zip(groups, found, strict=True):
                if tenant_id == group.tenant_id or self._groups.get(group_id) is not group:
                    continue
                log.info("live streams of %s end: their read key is no longer valid", group.tenant_id)
                for stream in list(group.streams):
                    stream.end("error", {"error": KEY_INVALID, "status": 401})

    def _tenants_of(self, keys: list[str]) -> list[str | None]:
        check = self._key_tenant
        assert check is not None
        return [check(key) for key in keys]

    async def close(self) -> None:
        """End every stream (without a frame) and the hub's tasks, subscription and own client."""
        self._closed = True
        tasks = [t for t in (self._listener, self._watcher, *self._tasks) if t is not None]
        tasks += [feed.task for feed in self._feeds.values()]
        for feed in list(self._feeds.values()):
            for stream in list(feed.streams):
                stream.end()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        async with self._pubsub_lock:
            await self._drop_pubsub()
        if self._owns_client:
            await self.client.aclose()


class LiveResponse(StreamingResponse):
    """The SSE response of one stream; its slot is freed however the response ends, even before it starts."""

    media_type = "text/event-stream"

    def __init__(self, stream: LiveStream, headers: dict[str, str] | None = None) -> None:
        self._stream = stream
        self._frames = stream.frames()
        super().__init__(self._frames, media_type="text/event-stream", headers=headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._stream.release()
            await self._frames.aclose()


async def stream(
    reader: LiveReader, client: redis.asyncio.Redis, tenant_id: str, interval_s: float
) -> AsyncIterator[bytes]:
    """SSE frames: `counters` at start, after every update and every interval; `correction` per restated minute.

    One stream on a hub of its own over `client`; the API serves all its streams from one shared
    hub instead, which sends exactly these frames.
    """
    hub = LiveHub(reader, client, interval_s)
    try:
        async for frame in hub.open(tenant_id).frames():
            yield frame
    finally:
        await hub.close()

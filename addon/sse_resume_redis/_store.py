"""A history in Redis, shared by every proxy that points at the same server.

Each proxy keeps its own :class:`~sse_resume_core.MemoryHistory` in front of Redis, and Redis is where proxies
meet:

* **Writes go behind.** The stream callable records into the local history (synchronous, as the storage
  interface requires) and queues the write; a task sends queued writes to Redis in pipelined batches. A slow or
  dead Redis therefore never holds a client's stream back: the queue is bounded (the oldest writes are given up
  first, counted and logged), failed batches are retried with backoff, and the store reports itself down
  meanwhile, up again as soon as a batch lands.
* **A batch fits its time.** A batch is bounded in writes and in bytes, and is given time for its size at an
  assumed bandwidth (see :data:`RATE`): over a slow link, large events go in small batches rather than in one
  that can never arrive in time. After a timeout the assumed bandwidth halves (smaller batches, more time per
  byte), down to :data:`MIN_RATE`; it doubles again when a batch shows that one twice its size would have been
  in time. A batch always holds at least one write, however large, so every attempt can make progress.
* **Lookups ask Redis first**, within ``timeout``. A stream found there is *adopted*: the events this proxy lacks
  are copied into its local history under the stream's name, so that the relay continues and deduplicates the
  stream exactly as if this proxy had seen it. When Redis does not answer in time, the local history answers.
* **One Lua script per write**, so concurrent proxies never store an event twice: an id already held for a stream
  is not added, trimming to ``max_events`` and the expiry of the session's keys happen in the same step.

Layout, per session (all keys share the hash tag ``{<session key>}``, so one session lives on one Redis Cluster
slot and the scripts' keys are always together):

* ``<prefix>{S}:ev``: a sorted set of events scored by a per-session sequence number; a member is
  ``seq NUL stream NUL flag+id NUL time NUL raw`` (flag ``1`` when the event has an id; raw empty in ids-only
  mode). Event ids never contain NUL (the SSE parser drops such ids), nor do stream names;
* ``<prefix>{S}:ids``: a hash ``stream NUL id -> seq``, to refuse an id a stream holds already;
* ``<prefix>{S}:last``: a hash ``id -> seq`` of its newest occurrence, to find a ``Last-Event-ID``;
* ``<prefix>{S}:seq``: the sequence counter.

Every key expires ``ttl`` seconds after the session's last write; events older than ``ttl`` are not served.
Session keys are computed by the caller; proxies that share a Redis must compute them alike (the addon keys them
with ``sse_store_secret``, the same on every proxy).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from sse_resume_core import Found, HistoryLimits, MemoryHistory, Recorded
from sse_resume_core._logsafe import redact_url as redact
from sse_resume_core._store import StoreHealth

__all__ = ["RedisHistory", "StoreHealth", "redact"]

log = logging.getLogger("sse_resume")

PREFIX: Final = "sse-resume:"
BATCH: Final = 256  # writes per pipeline, at most
RATE: Final = 1024 * 1024
"""Bandwidth (bytes/s) a batch is given time for, at first and at most. A batch holds at most one second of it
(:data:`BATCH_BYTES`) and is given ``write timeout + its bytes / RATE`` seconds: 3 s or more, so a full batch
arrives in time over any link faster than about 350 KB/s."""
BATCH_BYTES: Final = RATE  # bytes per batch at RATE (one write larger than this goes alone)
MIN_RATE: Final = 64 * 1024
"""The slowest bandwidth assumed after timeouts: batches of 64 KiB (16 writes), each write given time for its
size at 64 KiB/s."""
WRITE_TIMEOUT: Final = 2.0  # seconds a batch is given besides its bytes (or 8 timeouts, if longer): latency, Lua
MAX_QUEUED: Final = 100_000  # writes waiting for Redis; beyond it the oldest are given up
MAX_QUEUED_BYTES: Final = 64 * 1024 * 1024
BACKOFF: Final = (0.1, 5.0)  # first and longest wait before trying a failed Redis again, seconds

# KEYS: ev, ids, last, seq. ARGV: max_events, ttl (s), then 5 per event: stream, id, has_id ("1"/"0"), time, raw.
# Records the events in order (an id the stream holds already is refused), trims, and renews the expiry.
_RECORD: Final = r"""
for i = 3, #ARGV, 5 do
  local stream, id, has_id = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local field = stream .. '\0' .. id
  if has_id ~= '1' or redis.call('HEXISTS', KEYS[2], field) == 0 then
    local seq = redis.call('INCR', KEYS[4])
    if has_id == '1' then
      redis.call('HSET', KEYS[2], field, seq)
      redis.call('HSET', KEYS[3], id, seq)
    end
    local member = seq .. '\0' .. stream .. '\0' .. has_id .. id .. '\0' .. ARGV[i + 3] .. '\0' .. ARGV[i + 4]
    redis.call('ZADD', KEYS[1], seq, member)
  end
end
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[1])
if excess > 0 then
  for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, excess - 1)) do
    local a = string.find(m, '\0', 1, true)
    local b = string.find(m, '\0', a + 1, true)
    local c = string.find(m, '\0', b + 1, true)
    if string.sub(m, b + 1, b + 1) == '1' then
      local old = string.sub(m, 1, a - 1)
      local id = string.sub(m, b + 2, c - 1)
      local f = string.sub(m, a + 1, b - 1) .. '\0' .. id
      if redis.call('HGET', KEYS[2], f) == old then redis.call('HDEL', KEYS[2], f) end
      if redis.call('HGET', KEYS[3], id) == old then redis.call('HDEL', KEYS[3], id) end
    end
  end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, excess - 1)
end
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[2]) end
"""

# KEYS: ev, last. ARGV: id. Returns the members from the id's event on (every stream), or nil.
_FIND: Final = r"""
local seq = redis.call('HGET', KEYS[2], ARGV[1])
if not seq then return false end
return redis.call('ZRANGEBYSCORE', KEYS[1], seq, '+inf')
"""


class RedisHistory(MemoryHistory):
    """A :class:`MemoryHistory` whose writes also go to Redis and whose lookups ask Redis first."""

    def __init__(
        self,
        url: str,
        limits: HistoryLimits | None = None,
        *,
        timeout: float = 0.25,
        prefix: str = PREFIX,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(limits, clock)
        self.url = url
        self.timeout = timeout
        self.prefix = prefix
        self.wall = wall
        self._health = StoreHealth()
        self._redis = aioredis.from_url(
            url,
            socket_timeout=max(timeout * 4, 1.0),
            socket_connect_timeout=max(timeout * 4, 1.0),
        )
        self._write_timeout = max(timeout * 8, WRITE_TIMEOUT)
        # Writes have a client of their own, without a socket timeout: each batch is given a time for its size
        # (a socket timeout would cut a large batch over a slow link whatever that time). One immediate retry on
        # a new connection, for the pool's dead connection after a Redis restart.
        self._writes = aioredis.from_url(
            url,
            socket_timeout=None,
            socket_connect_timeout=self._write_timeout,
            retry=Retry(NoBackoff(), 1),
        )
        self._record_script = self._writes.register_script(_RECORD)
        self._find_script = self._redis.register_script(_FIND)
        self._queue: deque[tuple[str, Any]] = deque()
        self._queued_bytes = 0
        self._inflight = 0  # writes of the batch being sent
        self._rate: float = RATE  # the bandwidth batches are sized and timed for, MIN_RATE to RATE
        self._dropped_since: int | None = None  # health.dropped when writes began to be given up, until they land
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._token = secrets.token_hex(4)  # streams this proxy opens are named <token>.<n>: unique across proxies
        self._numbers = itertools.count(1)
        self._closed = False

    @property
    def _down(self) -> bool:
        """An exchange failed and none has succeeded since: lookups stay local until the writer task reaches
        Redis again (before the first exchange, lookups try Redis)."""
        return not self._health.up and self._health.failures > 0

    # -- the synchronous hot path: local first, Redis behind ---------------------------------------------------

    def new_stream(self, session: str, name: str | None = None) -> str:
        return super().new_stream(session, name or f"{self._token}.{next(self._numbers)}")

    def record(self, session: str, stream: str, event_id: str | None, raw: bytes) -> Recorded:
        result = super().record(session, stream, event_id, raw)
        if result is Recorded.NEW:
            kept = raw if self.limits.replay else b""
            self._enqueue(("record", (session, stream, event_id, kept, self.wall())), len(kept) + 200)
        return result

    def record_many(self, session: str, stream: str, event_ids: list[str | None], raws: list[bytes]) -> None:
        for event_id, raw in zip(event_ids, raws, strict=True):  # each write is queued on its own
            self.record(session, stream, event_id, raw)

    def drop_session(self, session: str) -> bool:
        self._enqueue(("drop", session), 100)
        return super().drop_session(session)

    def clear(self) -> int:
        self._enqueue(("clear", None), 0)
        return super().clear()

    def _enqueue(self, item: tuple[str, Any], size: int) -> None:
        queue = self._queue
        queue.append(item)
        self._queued_bytes += size
        if len(queue) > MAX_QUEUED or self._queued_bytes > MAX_QUEUED_BYTES:
            self._give_up_oldest()
        if not self._wake.is_set():
            self._wake.set()
        if self._task is None:
            self.start()

    # -- lookups: Redis first, within the timeout ----------------------------------------------------------------

    async def find(self, session: str, event_id: str) -> Found | None:
        if not event_id:
            return None
        self.start()
        if self._down:  # the writer task probes Redis and clears this when it answers again
            self._health.fallbacks += 1
            return self.lookup(session, event_id)
        try:
            async with asyncio.timeout(self.timeout):
                members = await self._call_find(session, event_id)
        except (RedisError, OSError, TimeoutError) as e:
            self._health.fallbacks += 1
            self._failed("lookup", e)
            return self.lookup(session, event_id)
        self._ok()
        if members:
            try:
                self._adopt(session, members)
            except (ValueError, IndexError) as e:  # not what this store writes: someone else's keys, or damage
                log.warning("sse-resume: unreadable history in Redis for session %s (%s); not used", session[:12], e)
        return self.lookup(session, event_id)

    async def _call_find(self, session: str, event_id: str) -> list[bytes]:
        """Run the lookup script. After a Redis restart the pool's idle connections are dead, and each fails on
        its next use: on such a failure they are dropped and the script runs again, on a new connection (the
        caller's timeout bounds it all). Without this the first lookup after every restart would miss."""
        keys = self._keys(session, "ev", "last")
        try:
            members: list[bytes] = await self._find_script(keys=keys, args=[_b(event_id)])
        except RedisConnectionError:
            await self._redis.connection_pool.disconnect(inuse_connections=False)
            members = await self._find_script(keys=keys, args=[_b(event_id)])
        return members

    def _adopt(self, session: str, members: list[bytes]) -> None:
        """Copy into the local history the events of the found stream that it lacks, in their order."""
        oldest = self.wall() - self.limits.ttl
        first = members[0].split(b"\0", 4)
        stream = first[1].decode()
        if float(first[3]) < oldest:
            return  # the id's own event has expired: not found
        entries: list[tuple[str | None, bytes]] = []
        for member in members:
            _seq, name, flagged, stamp, raw = member.split(b"\0", 4)
            if name.decode() == stream and float(stamp) >= oldest:
                entries.append((flagged[1:].decode("utf-8", "surrogatepass") if flagged[:1] == b"1" else None, raw))
        super().new_stream(session, stream)
        start = 0  # after the newest event this proxy holds already
        for i, (event_id, raw) in enumerate(entries):
            if event_id and self.position(session, stream, event_id, raw) is not None:
                start = i + 1
        for event_id, raw in entries[start:]:
            super().record(session, stream, event_id, raw)

    # -- the task that talks to Redis --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer task (needs a running event loop; without one, nothing happens yet)."""
        if self._task is not None or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._task = loop.create_task(self._run(), name="sse-resume redis writer")

    async def _run(self) -> None:
        delay = BACKOFF[0]
        while not self._closed:
            try:
                if not self._health.up:
                    async with asyncio.timeout(self._write_timeout):
                        await self._writes.ping()
                if self._queue:
                    await self._flush_batch()  # within a time for its size
                self._ok()
                delay = BACKOFF[0]
            except (RedisError, OSError, TimeoutError) as e:
                self._failed("write", e)
                await asyncio.sleep(delay * (0.9 + 0.2 * secrets.randbelow(1000) / 1000))
                delay = min(delay * 2, BACKOFF[1])
                continue
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()

    async def _flush_batch(self) -> None:
        """Send the oldest queued writes: as many as :meth:`_budget` allows (one at least), within
        ``write timeout + bytes / rate`` seconds. A timeout halves the rate (the next batch is smaller, and has
        more time per byte); a batch that shows one of twice the budget would have been in time doubles it."""
        writes, budget = self._budget()
        batch, size = _take(self._queue, writes, budget)
        self._inflight = len(batch)
        allowed = self._write_timeout + size / self._rate
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(allowed):
                await self._write(batch)
        except BaseException as e:
            # Put the batch back in front, in order, for the next try (an id written twice is refused by the
            # script; the queue's bound still holds).
            self._queue.extendleft(reversed(batch))
            if isinstance(e, TimeoutError):
                self._rate = max(self._rate / 2, MIN_RATE)
            raise
        finally:
            self._inflight = 0
        took = loop.time() - started
        # Would a batch of twice the budget have taken less than its time? Judged from this one, scaled up (its
        # latency too: a small batch never proves a large one fits).
        if self._rate < RATE and took * 2 * budget / max(size, 1) < self._write_timeout + budget / self._rate:
            self._rate = min(self._rate * 2, RATE)
        self._queued_bytes -= size
        self._health.writes += sum(1 for kind, _ in batch if kind == "record")
        self._landed()

    def _budget(self) -> tuple[int, int]:
        """Writes and bytes the next batch may hold: :data:`BATCH` and :data:`BATCH_BYTES` at :data:`RATE`,
        in proportion below it."""
        share = self._rate / RATE
        return max(1, int(BATCH * share)), int(BATCH_BYTES * share)

    async def _write(self, batch: list[tuple[str, Any]]) -> None:
        limits = self.limits
        max_events, ttl = str(limits.max_events), str(max(1, math.ceil(limits.ttl)))
        pipe = self._writes.pipeline(transaction=False)
        pending: dict[str, list[Any]] = {}  # session -> script arguments of its consecutive events

        async def send_pending() -> None:
            for session, args in pending.items():
                keys = self._keys(session, "ev", "ids", "last", "seq")
                await self._record_script(keys=keys, args=[max_events, ttl, *args], client=pipe)
            pending.clear()

        for kind, payload in batch:
            if kind == "record":  # one script call per session and batch: events of a session stay in order
                session, stream, event_id, raw, stamp = payload
                args = pending.setdefault(session, [])
                args += (stream, _b(event_id or ""), "1" if event_id else "0", repr(stamp), raw)
                continue
            await send_pending()  # a drop or a clear comes after the writes queued before it
            if kind == "drop":
                pipe.delete(*self._keys(payload, "ev", "ids", "last", "seq"))
            else:
                await pipe.execute()
                pipe = self._writes.pipeline(transaction=False)
                async for key in self._writes.scan_iter(match=self.prefix + "{*", count=1000):
                    pipe.delete(key)
        await send_pending()
        await pipe.execute()

    def _keys(self, session: str, *names: str) -> list[str]:
        return [f"{self.prefix}{{{session}}}:{name}" for name in names]

    def _ok(self) -> None:
        if not self._health.up:
            self._health.up = True
            log.info("sse-resume: Redis store %s is available", redact(self.url))

    def _failed(self, what: str, error: BaseException) -> None:
        self._health.failures += 1
        if self._health.up or self._health.failures == 1:
            log.warning(
                "sse-resume: Redis store %s unavailable (%s: %s); serving from this proxy's history and retrying",
                redact(self.url),
                what,
                type(error).__name__ if isinstance(error, TimeoutError) else error,
            )
        self._health.up = False
        self._wake.set()  # the writer task probes until Redis answers

    def _give_up_oldest(self) -> None:
        """Drop the oldest queued writes until the queue is within its bounds. The first time since writes last
        landed, say so in the log (counts and sizes, never a payload byte)."""
        queue = self._queue
        before = self._health.dropped
        while queue and (len(queue) > MAX_QUEUED or self._queued_bytes > MAX_QUEUED_BYTES):
            self._queued_bytes -= _size(queue.popleft())
            self._health.dropped += 1
        if self._dropped_since is None and self._health.dropped > before:
            self._dropped_since = before
            log.warning(
                "sse-resume: Redis store %s: more writes wait for it than the queue holds (%d writes, %d bytes): "
                "the oldest are given up until writes land again",
                redact(self.url),
                MAX_QUEUED,
                MAX_QUEUED_BYTES,
            )

    def _landed(self) -> None:
        if self._dropped_since is not None:
            log.info(
                "sse-resume: Redis store %s takes writes again; %d writes were given up meanwhile",
                redact(self.url),
                self._health.dropped - self._dropped_since,
            )
            self._dropped_since = None

    def health(self) -> StoreHealth:  # type: ignore[override]  # (a remote store's health is never None)
        self._health.queued = len(self._queue) + self._inflight
        return self._health

    snapshot_health = health

    async def aclose(self, flush: float = 1.0) -> None:
        """Write what is queued (for at most ``flush`` seconds), then stop and disconnect."""
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(flush):
                while self._queue and self._health.up:
                    await self._flush_batch()
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for client in (self._redis, self._writes):
            with contextlib.suppress(Exception):
                await client.aclose()


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _take(queue: deque[tuple[str, Any]], writes: int, budget: int) -> tuple[list[tuple[str, Any]], int]:
    """Pop the oldest writes off ``queue``: at most ``writes`` of them and ``budget`` bytes, but one at least
    (a write larger than the budget goes alone). Returns them and their size."""
    batch: list[tuple[str, Any]] = []
    size = 0
    while queue and len(batch) < writes:
        item_size = _size(queue[0])
        if batch and size + item_size > budget:
            break
        batch.append(queue.popleft())
        size += item_size
    return batch, size


def _size(item: tuple[str, Any]) -> int:
    kind, payload = item
    if kind == "record":
        return len(payload[3]) + 200
    return 100 if kind == "drop" else 0

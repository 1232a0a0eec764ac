"""A history in Redis, shared by every proxy that points at the same server.

A :class:`RedisHistory` holds a :class:`~sse_resume_core.MemoryHistory` of its own (:attr:`RedisHistory.local`)
and puts Redis behind it, where proxies meet:

* **Writes go behind.** The stream callable records into the local history (synchronous, as the storage
  interface requires) and queues the write: one write for a relay's batch of events (``record_many``), one for a
  single event. A task sends queued writes to Redis in pipelined batches, one script call per session and batch.
  A slow or dead Redis therefore never holds a client's stream back: the queue is bounded in events and in bytes
  (the oldest writes are given up first, counted and logged), failed batches are retried with backoff, and the
  store reports itself down meanwhile, up again as soon as a batch lands.
* **A batch fits its time.** A batch is bounded in events and in bytes, and is given time for its size at an
  assumed bandwidth (see :data:`RATE`): over a slow link, large events go in small batches rather than in one
  that can never arrive in time (a queued write larger than that is cut). After a timeout the assumed bandwidth
  halves (smaller batches, more time per byte), down to :data:`MIN_RATE`; it doubles again when a batch shows
  that one twice its size would have been in time. A batch always holds at least one event, however large, so
  every attempt can make progress.
* **Lookups ask Redis first**, within ``timeout``. Every stream of the session that holds an event with the id is
  *adopted*: its events that Redis holds, from its first, are copied into the local history under the stream's
  name (those the local history lacks, after the newest it holds), so that the relay continues and deduplicates
  the stream exactly as if this proxy had seen it, an upstream that starts over from its first event included.
  The local history then answers: an id held by several events (two streams, or one id with other bytes) is
  ambiguous there too. When Redis does not answer in time, the local history answers alone.
* **One Lua script per write**, so concurrent proxies never store an event twice: an event (id and CRC-32 of its
  bytes) already held for a stream is not added; trimming to ``max_events`` and the expiry of the session's keys
  happen in the same step.

Layout, version 2 (:data:`FORMAT`), per session (all keys share the hash tag ``{<session key>}``, so one session
lives on one Redis Cluster slot and the scripts' keys are always together):

* ``<prefix>v2:{S}:ev``: a sorted set of events scored by a per-session sequence number; a member is
  ``seq NUL stream NUL flag+id NUL time NUL crc NUL raw`` (flag ``1`` when the event has an id; ``crc`` the
  decimal CRC-32 of the event's bytes, :data:`~sse_resume_core._history.fingerprint`; raw empty in ids-only
  mode). Event ids never contain NUL (the SSE parser drops such ids), nor do stream names;
* ``<prefix>v2:{S}:ids``: a hash ``stream NUL id NUL crc -> seq``, to refuse an event a stream holds already;
* ``<prefix>v2:{S}:last``: a hash ``id -> seq`` of its newest occurrence, to find a ``Last-Event-ID``;
* ``<prefix>v2:{S}:seq``: the sequence counter.

Version 1 (``<prefix>{S}:ev`` and so on, members without the CRC, ids refused whatever their bytes) is never read:
its keys expire, and dropping a session or clearing the store deletes them too.

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
from collections.abc import Callable, Iterator, Sequence
from typing import Final, Literal

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

try:
    from redis.driver_info import DriverInfo
except ImportError:  # redis before 7.2 reads its version once, at import
    _CLIENT: dict[str, object] = {}
else:
    # redis 7.2 and later read their own version from the installed packages' metadata for every new connection
    # (to name themselves to the server): 5 ms a connection on a quiet machine, more in a large environment, and
    # paid within the first lookup's timeout after every Redis restart. Read once, here.
    _CLIENT = {"driver_info": DriverInfo(lib_version=redis.__version__)}

from sse_resume_core._history import (
    Found,
    HistoryLimits,
    HistoryStats,
    MemoryHistory,
    Recorded,
    SessionInfo,
    StoredEvent,
    fingerprint,
)
from sse_resume_core._logsafe import redact_url as redact
from sse_resume_core._store import StoreHealth

__all__ = ["RedisHistory", "StoreHealth", "redact"]

log = logging.getLogger("sse_resume")

PREFIX: Final = "sse-resume:"
FORMAT: Final = "v2:"
"""The layout's version, in every key after the prefix: proxies of two versions sharing a Redis never read each
other's keys."""
NAMES: Final = ("ev", "ids", "last", "seq")  # a session's keys, in the order the record script takes them
BATCH: Final = 256  # events per pipeline, at most
RATE: Final = 1024 * 1024
"""Bandwidth (bytes/s) a batch is given time for, at first and at most. A batch holds at most one second of it
(:data:`BATCH_BYTES`) and is given ``write timeout + its bytes / RATE`` seconds: 3 s or more, so a full batch
arrives in time over any link faster than about 350 KB/s."""
BATCH_BYTES: Final = RATE  # bytes per batch at RATE (one event larger than this goes alone)
MIN_RATE: Final = 64 * 1024
"""The slowest bandwidth assumed after timeouts: batches of 64 KiB (16 events), each event given time for its
size at 64 KiB/s."""
WRITE_TIMEOUT: Final = 2.0  # seconds a batch is given besides its bytes (or 8 timeouts, if longer): latency, Lua
MAX_QUEUED: Final = 100_000  # events (and deletions) waiting for Redis; beyond it the oldest are given up
MAX_QUEUED_BYTES: Final = 64 * 1024 * 1024
EVENT_COST: Final = 200  # bytes an event is counted for in the queue, besides its own
DROP_COST: Final = 100
BACKOFF: Final = (0.1, 5.0)  # first and longest wait before trying a failed Redis again, seconds

# KEYS: ev, ids, last, seq. ARGV: max_events, ttl (s), then 6 per event: stream, id, has_id ("1"/"0"), time, crc,
# raw. Records the events in order (one the stream holds already, same id and CRC, is refused), trims, and renews
# the expiry.
_RECORD: Final = r"""
for i = 3, #ARGV, 6 do
  local stream, id, has_id, crc = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 4]
  local field = stream .. '\0' .. id .. '\0' .. crc
  if has_id ~= '1' or redis.call('HEXISTS', KEYS[2], field) == 0 then
    local seq = redis.call('INCR', KEYS[4])
    if has_id == '1' then
      redis.call('HSET', KEYS[2], field, seq)
      redis.call('HSET', KEYS[3], id, seq)
    end
    local member = seq .. '\0' .. stream .. '\0' .. has_id .. id .. '\0' .. ARGV[i + 3] .. '\0' .. crc .. '\0'
      .. ARGV[i + 5]
    redis.call('ZADD', KEYS[1], seq, member)
  end
end
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[1])
if excess > 0 then
  for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, excess - 1)) do
    local a = string.find(m, '\0', 1, true)
    local b = a and string.find(m, '\0', a + 1, true)
    local c = b and string.find(m, '\0', b + 1, true)
    local d = c and string.find(m, '\0', c + 1, true)
    local e = d and string.find(m, '\0', d + 1, true)
    if e and string.sub(m, b + 1, b + 1) == '1' then
      local old = string.sub(m, 1, a - 1)
      local id = string.sub(m, b + 2, c - 1)
      local f = string.sub(m, a + 1, b - 1) .. '\0' .. id .. '\0' .. string.sub(m, d + 1, e - 1)
      if redis.call('HGET', KEYS[2], f) == old then redis.call('HDEL', KEYS[2], f) end
      if redis.call('HGET', KEYS[3], id) == old then redis.call('HDEL', KEYS[3], id) end
    end
  end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, excess - 1)
end
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[2]) end
"""

# KEYS: ev, last. ARGV: id. Returns, oldest first, every member of the streams that hold an event with the id (and
# any member it cannot read, for the caller to refuse), or nil when no event has the id.
_FIND: Final = r"""
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return false end
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local names, holding = {}, {}
for i, m in ipairs(members) do
  local a = string.find(m, '\0', 1, true)
  local b = a and string.find(m, '\0', a + 1, true)
  local c = b and string.find(m, '\0', b + 1, true)
  if c then
    local name = string.sub(m, a + 1, b - 1)
    names[i] = name
    if string.sub(m, b + 1, b + 1) == '1' and string.sub(m, b + 2, c - 1) == ARGV[1] then holding[name] = true end
  end
end
local out = {}
-- First, whether the session's oldest event is its first (numbers start at 1): if not, Redis trimmed or expired
-- events, and the streams adopted may have lost their front.
local first = members[1]
local cut = first and string.find(first, '\0', 1, true)
local seq = cut and tonumber(string.sub(first, 1, cut - 1))
if seq and seq > 1 then out[1] = 'trimmed' else out[1] = 'whole' end
for i, m in ipairs(members) do
  if names[i] == nil or holding[names[i]] then out[#out + 1] = m end
end
return out
"""


class _Write:
    """A queued write: events of one stream of a session, in order (a relay's batch, or one event), a session's
    deletion, or a clear. ``raws`` are empty in ids-only mode, where ``crcs`` carry the events' fingerprints (in
    replay mode they are computed from ``raws`` when the write is sent, off the stream's path)."""

    __slots__ = ("crcs", "ids", "kind", "raws", "session", "size", "stamp", "stream")

    def __init__(
        self,
        kind: Literal["record", "drop", "clear"],
        session: str = "",
        stream: str = "",
        ids: Sequence[str | None] = (),
        raws: Sequence[bytes] = (),
        crcs: Sequence[int] | None = None,
        stamp: float = 0.0,
    ) -> None:
        self.kind = kind
        self.session = session
        self.stream = stream
        self.ids = ids
        self.raws = raws
        self.crcs = crcs
        self.stamp = stamp
        if kind == "record":
            self.size = sum(map(len, raws)) + EVENT_COST * len(ids)
        else:
            self.size = DROP_COST if kind == "drop" else 0

    def __len__(self) -> int:
        """Events it writes (a deletion or a clear counts as one, for the queue's bound)."""
        return len(self.ids) if self.kind == "record" else 1

    def fitting(self, events: int, budget: int) -> int:
        """How many of its first events fit in ``events`` events and ``budget`` bytes."""
        n = min(events, len(self.ids))
        size = 0
        for i, raw in enumerate(itertools.islice(self.raws, n)):
            size += len(raw) + EVENT_COST
            if size > budget:
                return i
        return n

    def split(self, k: int) -> _Write:
        """Cut off its first ``k`` events, as a write of their own; it keeps the rest."""
        crcs = self.crcs
        head = _Write("record", self.session, self.stream, self.ids[:k], self.raws[:k], crcs and crcs[:k], self.stamp)
        self.ids, self.raws = self.ids[k:], self.raws[k:]
        self.crcs = crcs[k:] if crcs is not None else None
        self.size -= head.size
        return head

    def arguments(self) -> Iterator[bytes | str]:
        """The record script's arguments for its events (6 each)."""
        crcs = self.crcs
        if crcs is None:
            crcs = [fingerprint(raw) if i else 0 for i, raw in zip(self.ids, self.raws, strict=True)]
        stream, stamp = self.stream, repr(self.stamp)
        for event_id, raw, crc in zip(self.ids, self.raws, crcs, strict=True):
            yield stream
            yield _b(event_id or "")
            yield "1" if event_id else "0"
            yield stamp
            yield str(crc)
            yield raw


class RedisHistory:
    """A :class:`MemoryHistory` (:attr:`local`) whose writes also go to Redis and whose lookups ask Redis first.
    A :class:`~sse_resume_core.HistoryStore`."""

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
        self.local = MemoryHistory(limits, clock)
        """This proxy's own history: what every synchronous call answers from."""
        self.url = url
        self.timeout = timeout
        self.prefix = prefix
        self.wall = wall
        self._health = StoreHealth()
        self._redis = aioredis.from_url(
            url,
            socket_timeout=max(timeout * 4, 1.0),
            socket_connect_timeout=max(timeout * 4, 1.0),
            **_CLIENT,
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
            **_CLIENT,
        )
        self._record_script = self._writes.register_script(_RECORD)
        self._find_script = self._redis.register_script(_FIND)
        self._queue: deque[_Write] = deque()
        self._queued = 0  # events (and deletions) in the queue
        self._queued_bytes = 0  # their bytes, and those of the batch being sent
        self._inflight = 0  # events of the batch being sent
        self._rate: float = RATE  # the bandwidth batches are sized and timed for, MIN_RATE to RATE
        self._dropped_since: int | None = None  # health.dropped when writes began to be given up, until they land
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._token = secrets.token_hex(4)  # streams this proxy opens are named <token>.<n>: unique across proxies
        self._numbers = itertools.count(1)
        self._closed = False

    @property
    def limits(self) -> HistoryLimits:
        return self.local.limits

    @property
    def clock(self) -> Callable[[], float]:
        return self.local.clock

    @property
    def _down(self) -> bool:
        """An exchange failed and none has succeeded since: lookups stay local until the writer task reaches
        Redis again (before the first exchange, lookups try Redis)."""
        return not self._health.up and self._health.failures > 0

    # -- the synchronous hot path: local first, Redis behind ---------------------------------------------------

    def new_stream(self, session: str, name: str | None = None) -> str:
        return self.local.new_stream(session, name or f"{self._token}.{next(self._numbers)}")

    def record(self, session: str, stream: str, event_id: str | None, raw: bytes) -> Recorded:
        result = self.local.record(session, stream, event_id, raw)
        if result is Recorded.NEW:
            self._enqueue_events(session, stream, [event_id], [raw])
        return result

    def record_many(self, session: str, stream: str, event_ids: list[str | None], raws: list[bytes]) -> None:
        """Record the events locally, and queue one write for those that were new."""
        local = self.local
        # Nearly always, every event is new to the stream (a relay drops what its client has before recording):
        # then the local history takes them in bulk. Otherwise each is taken on its own, and only the new ones
        # are written.
        position = local.position
        seen: set[str] = set()
        fresh = True
        for event_id, raw in zip(event_ids, raws, strict=True):
            if event_id:
                if event_id in seen or position(session, stream, event_id, raw) is not None:
                    fresh = False
                    break
                seen.add(event_id)
        if fresh:
            local.record_many(session, stream, event_ids, raws)
            new_ids, new_raws = event_ids, raws
        else:
            new_ids, new_raws = [], []
            for event_id, raw in zip(event_ids, raws, strict=True):
                if local.record(session, stream, event_id, raw) is Recorded.NEW:
                    new_ids.append(event_id)
                    new_raws.append(raw)
        if new_ids:
            self._enqueue_events(session, stream, new_ids, new_raws)

    def _enqueue_events(self, session: str, stream: str, ids: list[str | None], raws: list[bytes]) -> None:
        if self.local.limits.replay:
            self._enqueue(_Write("record", session, stream, ids, raws, None, self.wall()))
            return
        # Ids only: no payload byte leaves the proxy, the events' fingerprints do. (An event without id, or a
        # reset, is not kept.)
        crcs = [fingerprint(raw) for event_id, raw in zip(ids, raws, strict=True) if event_id]
        if crcs:
            kept = ids if len(crcs) == len(ids) else [event_id for event_id in ids if event_id]
            self._enqueue(_Write("record", session, stream, kept, [b""] * len(kept), crcs, self.wall()))

    def drop_session(self, session: str) -> bool:
        self._enqueue(_Write("drop", session))
        return self.local.drop_session(session)

    def clear(self) -> int:
        self._enqueue(_Write("clear"))
        return self.local.clear()

    def _enqueue(self, write: _Write) -> None:
        queue = self._queue
        queue.append(write)
        self._queued += len(write)
        self._queued_bytes += write.size
        if self._queued > MAX_QUEUED or self._queued_bytes > MAX_QUEUED_BYTES:
            self._give_up_oldest()
        if not self._wake.is_set():
            self._wake.set()
        if self._task is None:
            self.start()

    # -- the local history's answers -----------------------------------------------------------------------------

    def position(self, session: str, stream: str, event_id: str, raw: bytes) -> int | None:
        return self.local.position(session, stream, event_id, raw)

    def stream_of(self, session: str, event_id: str, raw: bytes) -> str | None:
        return self.local.stream_of(session, event_id, raw)

    def newest_id(self, session: str, stream: str) -> str:
        return self.local.newest_id(session, stream)

    def forgotten(self, session: str) -> int:
        return self.local.forgotten(session)

    def lookup(self, session: str, event_id: str) -> Found | None:
        return self.local.lookup(session, event_id)

    def sessions(self) -> list[SessionInfo]:
        """This proxy's sessions (not everything Redis holds)."""
        return self.local.sessions()

    def events(self, session: str) -> list[StoredEvent]:
        return self.local.events(session)

    def reconfigure(self, limits: HistoryLimits) -> None:
        """New bounds, locally now and in Redis from the next write on (the replay mode cannot change)."""
        self.local.reconfigure(limits)

    def expire(self) -> None:
        self.local.expire()

    def snapshot(self) -> HistoryStats:
        return self.local.snapshot()

    def __contains__(self, session: object) -> bool:
        return session in self.local

    def __iter__(self) -> Iterator[str]:
        return iter(self.local)

    # -- lookups: Redis first, within the timeout ----------------------------------------------------------------

    async def find(self, session: str, event_id: str) -> Found | None:
        if not event_id:
            return None
        self.start()
        if self._down:  # the writer task probes Redis and clears this when it answers again
            self._health.fallbacks += 1
            return self.local.lookup(session, event_id)
        try:
            async with asyncio.timeout(self.timeout):
                members = await self._call_find(session, event_id)
        except (RedisError, OSError, TimeoutError) as e:
            self._health.fallbacks += 1
            self._failed("lookup", e)
            return self.local.lookup(session, event_id)
        self._ok()
        if members:
            try:
                self._adopt(session, event_id, members)
            except (ValueError, IndexError) as e:  # not what this store writes: someone else's keys, or damage
                log.warning("sse-resume: unreadable history in Redis for session %s (%s); not used", session[:12], e)
        return self.local.lookup(session, event_id)

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

    def _adopt(self, session: str, event_id: str, members: list[bytes]) -> None:
        """Copy into the local history the events it lacks of the streams that hold ``event_id``. Every member is
        read first: one that is not an event of this layout refuses them all (ValueError).

        When every event with the id is the same event (same bytes), in copies of one upstream stream that
        proxies recorded apart (two clients of a session, each fresh on a proxy of its own), one copy is adopted:
        the one the local history has, or else the newest. (Locally, such a response joins the stream that holds
        its first event, so there is one copy.) Otherwise every stream holding the id is, and the id is ambiguous
        here as it is in Redis."""
        trimmed = members[:1] == [b"trimmed"]
        members = members[1:] if members[:1] in ([b"trimmed"], [b"whole"]) else members
        oldest = self.wall() - self.limits.ttl
        streams: dict[str, list[tuple[str | None, bytes, int]]] = {}
        holding: list[str] = []  # the streams with an event that has the id, the newest occurrence's last
        crcs: set[int] = set()  # the CRCs of those events
        for member in members:
            _seq, stream, flagged, stamp, digits, raw = member.split(b"\0", 5)
            flag = flagged[:1]
            if flag not in (b"0", b"1"):
                raise ValueError("not an event")
            name = stream.decode()
            entries = streams.setdefault(name, [])
            if float(stamp) >= oldest:  # (an expired event is not served, though its key lives on)
                found = flagged[1:].decode("utf-8", "surrogatepass") if flag == b"1" else None
                crc = int(digits)
                entries.append((found, raw, crc))
                if found == event_id:
                    if name in holding:
                        holding.remove(name)
                    holding.append(name)
                    crcs.add(crc)
        if len(holding) > 1 and len(crcs) == 1:
            (crc,) = crcs
            local = self.local
            mine = [name for name in holding if local.position(session, name, event_id, b"", crc=crc) is not None]
            holding = mine[-1:] or holding[-1:]
        for name in holding:
            if streams[name]:
                self._adopt_stream(session, name, streams[name])
                if trimmed:  # (its front may be gone: a resume from it says so, see Found.forgotten)
                    self.local.forgot(session, name)

    def _adopt_stream(self, session: str, stream: str, entries: list[tuple[str | None, bytes, int]]) -> None:
        """Copy a stream's events (oldest first) into the local history: those after the newest that it holds
        already (none twice, none after a newer one), all of them when it holds none."""
        local = self.local
        local.new_stream(session, stream)
        start = 0
        for i, (event_id, raw, crc) in enumerate(entries):
            if event_id and local.position(session, stream, event_id, raw, crc=crc) is not None:
                start = i + 1
        for event_id, raw, crc in entries[start:]:
            local.record(session, stream, event_id, raw, crc=crc)

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
        """Send the oldest queued events: as many as :meth:`_budget` allows (one at least), within
        ``write timeout + bytes / rate`` seconds. A timeout halves the rate (the next batch is smaller, and has
        more time per byte); a batch that shows one of twice the budget would have been in time doubles it."""
        writes, budget = self._budget()
        batch, size = _take(self._queue, writes, budget)
        count = sum(map(len, batch))
        self._queued -= count
        self._inflight = count
        allowed = self._write_timeout + size / self._rate
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(allowed):
                await self._write(batch)
        except BaseException as e:
            # Put the batch back in front, in order, for the next try (an event written twice is refused by the
            # script; the queue's bound still holds).
            self._queue.extendleft(reversed(batch))
            self._queued += count
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
        self._health.writes += sum(len(write) for write in batch if write.kind == "record")
        self._landed()

    def _budget(self) -> tuple[int, int]:
        """Events and bytes the next batch may hold: :data:`BATCH` and :data:`BATCH_BYTES` at :data:`RATE`,
        in proportion below it."""
        share = self._rate / RATE
        return max(1, int(BATCH * share)), int(BATCH_BYTES * share)

    async def _write(self, batch: list[_Write]) -> None:
        limits = self.limits
        max_events, ttl = str(limits.max_events), str(max(1, math.ceil(limits.ttl)))
        pipe = self._writes.pipeline(transaction=False)
        pending: dict[str, list[bytes | str]] = {}  # session -> script arguments of its consecutive events

        async def send_pending() -> None:
            for session, args in pending.items():
                keys = self._keys(session, *NAMES)
                await self._record_script(keys=keys, args=[max_events, ttl, *args], client=pipe)
            pending.clear()

        for write in batch:
            if write.kind == "record":  # one script call per session and batch: events of a session stay in order
                pending.setdefault(write.session, []).extend(write.arguments())
                continue
            await send_pending()  # a drop or a clear comes after the writes queued before it
            if write.kind == "drop":
                pipe.delete(*self._keys(write.session, *NAMES), *self._keys_v1(write.session))
            else:
                await pipe.execute()
                pipe = self._writes.pipeline(transaction=False)
                for pattern in (self.prefix + FORMAT + "{*", self.prefix + "{*"):  # (version 1's keys too)
                    async for key in self._writes.scan_iter(match=pattern, count=1000):
                        pipe.delete(key)
        await send_pending()
        await pipe.execute()

    def _keys(self, session: str, *names: str) -> list[str]:
        return [f"{self.prefix}{FORMAT}{{{session}}}:{name}" for name in names]

    def _keys_v1(self, session: str) -> list[str]:
        return [f"{self.prefix}{{{session}}}:{name}" for name in NAMES]

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
        while queue and (self._queued > MAX_QUEUED or self._queued_bytes > MAX_QUEUED_BYTES):
            write = queue.popleft()
            self._queued -= len(write)
            self._queued_bytes -= write.size
            self._health.dropped += len(write)
        if self._dropped_since is None and self._health.dropped > before:
            self._dropped_since = before
            log.warning(
                "sse-resume: Redis store %s: more writes wait for it than the queue holds (%d events, %d bytes): "
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

    def health(self) -> StoreHealth:
        """How the exchange with Redis goes (``queued``: events waiting, those being sent included)."""
        self._health.queued = self._queued + self._inflight
        return self._health

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


def _take(queue: deque[_Write], events: int, budget: int) -> tuple[list[_Write], int]:
    """Pop the oldest writes off ``queue``: at most ``events`` events and ``budget`` bytes, but one event at least
    (an event larger than the budget goes alone). A write that does not fit whole is cut: its first events go
    now, the rest stays in front. Returns the writes taken and their size."""
    batch: list[_Write] = []
    size = 0
    count = 0
    while queue and count < events:
        write = queue[0]
        if write.kind == "record" and (count + len(write) > events or size + write.size > budget):
            k = write.fitting(events - count, budget - size)
            if not k and batch:
                break
            head = write.split(max(k, 1)) if max(k, 1) < len(write) else queue.popleft()
            batch.append(head)
            size += head.size
            break  # (the batch is full)
        if batch and size + write.size > budget:
            break
        batch.append(queue.popleft())
        size += write.size
        count += len(write)
    return batch, size

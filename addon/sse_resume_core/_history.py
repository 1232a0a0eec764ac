"""Bounded event history: what the proxy can replay, and what it deduplicates against.

History is kept per *session* (an opaque key the caller derives, for example from ``Mcp-Session-Id`` and the
upstream URL) and, inside a session, per *stream*: each upstream SSE response is one stream, and a reconnect that
resumes a known id continues the stream that id came from (MCP forbids replaying one stream's events on another).

Layout, chosen so that an ids-only history costs about 100 bytes per event beyond the id string:

* each session holds its events in arrival order, in columns (ids, arrival times, stream numbers, and in full
  mode the raw bytes), numbered by a per-session sequence number; eviction is always oldest first, from the front;
* each stream holds a :class:`sortedcontainers.SortedList` of the sequence numbers of its events, for the events
  after a position in O(log n + k), and a dict from event id to sequence number, for lookups in O(1); numbers
  recorded since the last lookup wait in a deque and are merged in by the next lookup (a record appends, which
  costs far less than a sorted insert);
* sessions sit in least-recently-used order, so the global caps drop the coldest first.

Bounds, all enforced on every write: ``max_events`` per session (reason ``count``), ``ttl`` seconds per event and
per idle session (``ttl``), ``max_sessions`` (``session-lru``) and ``max_bytes`` across all sessions (``bytes``).
Stored bytes are an estimate that errs high: payload and id lengths plus a measured per-event, per-stream and
per-session overhead.
"""

from __future__ import annotations

import time
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from itertools import repeat
from typing import Final, Literal

from sortedcontainers import SortedList

__all__ = [
    "EvictionReason",
    "Found",
    "HistoryLimits",
    "HistoryStats",
    "MemoryHistory",
    "Recorded",
    "SessionInfo",
    "StoredEvent",
]

EvictionReason = Literal["count", "ttl", "session-lru", "bytes"]
REASONS: Final[tuple[EvictionReason, ...]] = ("count", "ttl", "session-lru", "bytes")

# Estimated bytes of bookkeeping, measured with tracemalloc on CPython 3.12 (tests/unit/test_history.py checks that
# the estimate stays above what is really allocated).
EVENT_OVERHEAD: Final = 120  # list slots, time, stream number, sorted-list slot and its int, dict entry
PAYLOAD_OVERHEAD: Final = 48  # a bytes object's header and its list slot, in full mode
ID_OVERHEAD: Final = 56  # a str object's header
STREAM_OVERHEAD: Final = 2000  # a SortedList and a deque (770 bytes empty), their dict entry
SESSION_OVERHEAD: Final = 1600
MAX_EMPTY_STREAMS: Final = 16  # streams opened without an event yet, per session, beyond max_events


class Recorded(Enum):
    """What :meth:`MemoryHistory.record` did with an event."""

    NEW = "new"
    """Stored (or, in ids-only mode, its id remembered)."""
    DUPLICATE = "duplicate"
    """Its id is already held for this stream: the first occurrence stands, nothing is stored."""
    SKIPPED = "skipped"
    """Nothing worth keeping: an event without id in ids-only mode."""


@dataclass(frozen=True, slots=True)
class HistoryLimits:
    """The bounds of a history. ``replay=False`` keeps ids only: no payload byte is stored."""

    max_events: int = 1000
    ttl: float = 300.0
    max_sessions: int = 10_000
    max_bytes: int = 256 * 1024 * 1024
    replay: bool = True


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One held event. ``raw`` is ``None`` in ids-only mode; ``id`` is ``None`` for an event without id."""

    seq: int
    stream: str
    id: str | None
    raw: bytes | None
    time: float


@dataclass(frozen=True, slots=True)
class Found:
    """Where a ``Last-Event-ID`` sits: its stream, its position, and what that stream holds after it."""

    stream: str
    seq: int
    after: tuple[StoredEvent, ...]
    newest_id: str
    """The newest non-empty id held for the stream: what to ask an upstream to resume from."""


@dataclass(frozen=True, slots=True)
class SessionInfo:
    key: str
    events: int
    streams: int
    bytes: int
    age: float
    idle: float


@dataclass(slots=True)
class HistoryStats:
    """Counters a caller can export. ``stored`` and ``evicted`` only grow."""

    stored: int = 0
    evicted: dict[EvictionReason, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    events: int = 0
    sessions: int = 0
    bytes: int = 0


class _Stream:
    __slots__ = ("by_id", "name", "newest_id", "number", "seqs", "tail")

    def __init__(self, name: str, number: int) -> None:
        self.name = name
        self.number = number  # what the session's stream column holds for this stream's events
        # Sequence numbers of this stream's held events, ascending: those in the sorted list, then those in
        # ``tail``, recorded since the last lookup (each greater than every one in the list). Appending to a
        # deque costs a twentieth of a SortedList.add; a lookup merges the tail in first.
        self.seqs: SortedList = SortedList()
        self.tail: deque[int] = deque()
        self.by_id: dict[str, int] = {}  # id -> sequence number of its first occurrence
        self.newest_id = ""

    def empty(self) -> bool:
        return not self.seqs and not self.tail

    def merged(self) -> SortedList:
        """The sorted list of every held sequence number. Runtime complexity: O(tail + log n) amortized."""
        if self.tail:
            self.seqs.update(self.tail)
            self.tail.clear()
        return self.seqs


class _Session:
    __slots__ = (
        "base",
        "bytes",
        "created",
        "ids",
        "key",
        "next_stream",
        "raws",
        "start",
        "stream_of",
        "streams",
        "streams_by_number",
        "times",
        "used",
    )

    def __init__(self, key: str, now: float, replay: bool, base: int) -> None:
        self.key = key
        # Column i holds event number base + i; columns [0, start) are evicted and trimmed lazily. A new
        # session starts above every number the store has given out, so numbers are unique store-wide.
        self.base = base
        self.start = 0
        self.ids: list[str | None] = []
        self.raws: list[bytes | None] | None = [] if replay else None
        # Arrival times as float32 seconds since the session was created: 4 bytes an event, precise to well
        # under a second for sessions younger than a month (an idle session is dropped after ttl anyway).
        self.times = array("f")
        self.stream_of = array("I")
        self.streams: dict[str, _Stream] = {}
        self.streams_by_number: dict[int, _Stream] = {}
        self.next_stream = 1
        self.bytes = SESSION_OVERHEAD
        self.created = now
        self.used = now

    def __len__(self) -> int:
        return len(self.ids) - self.start

    def event(self, seq: int) -> StoredEvent:
        i = seq - self.base
        stream = self.streams_by_number[self.stream_of[i]]
        raw = self.raws[i] if self.raws is not None else None
        return StoredEvent(seq, stream.name, self.ids[i], raw, self.created + self.times[i])


def _cost(event_id: str | None, raw: bytes | None) -> int:
    cost = EVENT_OVERHEAD
    if event_id:
        cost += ID_OVERHEAD + len(event_id)
    if raw is not None:
        cost += PAYLOAD_OVERHEAD + len(raw)
    return cost


class MemoryHistory:
    """The in-memory history store. Sans-I/O: time comes from ``clock`` (``time.monotonic`` by default).

    >>> h = MemoryHistory(HistoryLimits(max_events=3))
    >>> s = h.new_stream("session")
    >>> for n in "1234":
    ...     _ = h.record("session", s, n, f"id: {n}\\ndata: x\\n\\n".encode())
    >>> found = h.lookup("session", "2")
    >>> [e.id for e in found.after], found.newest_id
    (['3', '4'], '4')
    >>> h.lookup("session", "1") is None  # evicted: the session holds 3 events
    True
    """

    def __init__(self, limits: HistoryLimits | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or HistoryLimits()
        self.clock = clock
        self._sessions: OrderedDict[str, _Session] = OrderedDict()  # least recently used first
        self._bytes = 0
        self._events = 0
        self._mru: _Session | None = None  # the session last moved to the end of the LRU order
        self.stats = HistoryStats()

    # -- writing ---------------------------------------------------------------------------------------------

    def new_stream(self, session: str, name: str | None = None) -> str:
        """Open a new stream in ``session`` (creating the session) and return its name.

        ``name`` names it (a store shared by several proxies needs names unique across them); by default
        streams are numbered. Opening a stream that exists already changes nothing.
        Runtime complexity: O(1) amortized (plus any eviction the new session causes).
        """
        s = self._touch(session)
        if name is None:
            while str(s.next_stream) in s.streams:  # a name a caller re-opened after its session was dropped
                s.next_stream += 1
            name = str(s.next_stream)
        if name in s.streams:
            return name
        self._stream(s, name)
        self._enforce_global(s)
        return name

    def record(self, session: str, stream: str, event_id: str | None, raw: bytes) -> Recorded:
        """Record one event of ``stream``, in arrival order. Runtime complexity: O(log n) amortized.

        ``event_id`` is the block's own ``id`` field (``None`` without one, ``""`` for a reset). An id already
        held for the stream is not recorded again. In ids-only mode the payload is not kept, and an event
        without id is not recorded at all. Oldest events are evicted as the bounds require.
        """
        limits = self.limits
        now = self.clock()
        s = self._use(session, now)
        ids = s.ids
        st = s.streams.get(stream) or self._stream(s, stream)
        cost = EVENT_OVERHEAD
        if event_id:
            if event_id in st.by_id:
                return Recorded.DUPLICATE
            cost += ID_OVERHEAD + len(event_id)
        raws = s.raws
        if raws is not None:
            raws.append(raw)
            cost += PAYLOAD_OVERHEAD + len(raw)
        elif not event_id:
            return Recorded.SKIPPED
        seq = s.base + len(ids)
        ids.append(event_id)
        s.times.append(now - s.created)
        s.stream_of.append(st.number)
        st.tail.append(seq)
        if event_id:
            st.by_id[event_id] = seq
            st.newest_id = event_id
        s.bytes += cost
        self._bytes += cost
        self._events += 1
        self.stats.stored += 1
        if len(ids) - s.start > limits.max_events:
            self._evict_oldest(s, "count")
        if self._bytes > limits.max_bytes:
            self._enforce_global(s)
        return Recorded.NEW

    def record_many(self, session: str, stream: str, event_ids: list[str | None], raws: list[bytes]) -> None:
        """Record several events of ``stream`` at once, in order: what :meth:`record` of each would do.

        The relay's batches: bulk list operations instead of one call per event. Events that :meth:`record`
        would treat one by one (a repeated id, an id-less event in ids-only mode) take that path.
        Runtime complexity: O(k) amortized for k events (plus the evictions they cause).
        """
        n = len(event_ids)
        limits = self.limits
        now = self.clock()
        s = self._sessions.get(session)
        st = None if s is None else s.streams.get(stream)
        if n >= 2 and s is not None and st is not None and s.raws is not None and now - s.used <= limits.ttl:
            first = s.base + len(s.ids)  # (expiring events in _use below does not change it)
            seqs = range(first, first + n)
            index: dict[str, int]
            if all(event_ids):  # the usual batch: every event has an id
                index = dict(zip(event_ids, seqs, strict=True))  # type: ignore[arg-type]  # none is None
                named = n
            else:
                index = {event_id: seq for event_id, seq in zip(event_ids, seqs, strict=True) if event_id}
                named = n - event_ids.count(None) - event_ids.count("")
            # No id repeated in the batch, none held already (those go one by one, as record() takes them).
            if len(index) == named and st.by_id.keys().isdisjoint(index):
                self._use(session, now)  # marks it used, and expires old events: the stream may go with them
                if s.streams.get(stream) is st:
                    self._append(s, st, s.raws, event_ids, raws, now, seqs, index)
                    return
        for event_id, raw in zip(event_ids, raws, strict=True):
            self.record(session, stream, event_id, raw)

    def _append(
        self,
        s: _Session,
        st: _Stream,
        held: list[bytes | None],
        event_ids: list[str | None],
        raws: list[bytes],
        now: float,
        seqs: range,
        index: dict[str, int],
    ) -> None:
        """The bulk part of :meth:`record_many`: new events of one stream, numbered ``seqs``, none of their ids
        held (``index`` maps those with one to their sequence numbers)."""
        limits = self.limits
        n = len(event_ids)
        ids = s.ids
        ids.extend(event_ids)
        held.extend(raws)
        s.times.extend(array("f", (now - s.created,)) * n)  # (arrays repeat and extend by copying memory)
        s.stream_of.extend(array("I", (st.number,)) * n)
        st.tail.extend(seqs)
        st.by_id.update(index)
        if index:
            st.newest_id = next(reversed(index))
        cost = (
            n * (EVENT_OVERHEAD + PAYLOAD_OVERHEAD)
            + len(index) * ID_OVERHEAD
            + sum(map(len, raws))
            + sum(map(len, index))
        )
        s.bytes += cost
        self._bytes += cost
        self._events += n
        self.stats.stored += n
        excess = len(ids) - s.start - limits.max_events
        if excess > 0:
            self._evict_oldest(s, "count", excess)
        if self._bytes > limits.max_bytes:
            self._enforce_global(s)

    def drop_session(self, session: str) -> bool:
        """Forget a session whole. Runtime complexity: O(1) (plus freeing its events)."""
        s = self._sessions.pop(session, None)
        if s is None:
            return False
        self._forget(s)
        return True

    def clear(self) -> int:
        """Forget every session; return how many there were. Runtime complexity: O(sessions)."""
        count = len(self._sessions)
        for key in list(self._sessions):
            self.drop_session(key)
        return count

    def reconfigure(self, limits: HistoryLimits) -> None:
        """Apply new bounds now, evicting what they no longer allow. Runtime complexity: O(evicted + sessions).

        The mode (``replay``) cannot change: a store of ids cannot grow payloads back. Make a new store for that.
        """
        if limits.replay != self.limits.replay:
            raise ValueError("the replay mode of a history cannot change")
        self.limits = limits
        self.expire()
        for s in list(self._sessions.values()):
            while len(s) > limits.max_events:
                self._evict_oldest(s, "count")
        self._enforce_global(None)

    def expire(self) -> None:
        """Drop idle sessions and expired events now. Runtime complexity: O(sessions + expired events)."""
        now = self.clock()
        self._drop_idle(now)
        for s in list(self._sessions.values()):
            self._expire_session(s, now)

    # -- reading ---------------------------------------------------------------------------------------------

    def lookup(self, session: str, event_id: str) -> Found | None:
        """Find ``event_id`` in ``session``: its stream and the events held after it there.

        Runtime complexity: O(s + log n + k) for k events after it, s being the session's streams (the id
        is looked up in each, newest stream first: two streams of one session may hold the same id when an
        upstream numbers every response from 1), plus merging what was recorded since the last lookup.
        ``None`` when the id is not held (never seen, evicted, expired, or empty).
        """
        s = self._sessions.get(session)
        if s is None or not event_id:
            return None
        now = self.clock()
        if now - s.used > self.limits.ttl:
            self._drop_idle(now)
            return None
        self._expire_session(s, now)
        for st in reversed(s.streams.values()):
            seq = st.by_id.get(event_id)
            if seq is not None:
                after = tuple(s.event(n) for n in st.merged().irange(seq, inclusive=(False, True)))
                return Found(st.name, seq, after, st.newest_id)
        return None

    def position(self, session: str, stream: str, event_id: str) -> int | None:
        """The sequence number of ``event_id`` in ``stream``, if held. Runtime complexity: O(1).

        Sequence numbers grow with arrival and are never reused, even by a session created again later.
        """
        s = self._sessions.get(session)
        if s is None:
            return None
        st = s.streams.get(stream)
        return None if st is None else st.by_id.get(event_id)

    def newest_id(self, session: str, stream: str) -> str:
        """The newest non-empty id held for ``stream``, or ``""``. Runtime complexity: O(1)."""
        s = self._sessions.get(session)
        st = None if s is None else s.streams.get(stream)
        return "" if st is None else st.newest_id

    def events(self, session: str) -> list[StoredEvent]:
        """Every event held for ``session``, oldest first. Runtime complexity: O(n)."""
        s = self._sessions.get(session)
        if s is None:
            return []
        self._expire_session(s, self.clock())
        return [s.event(seq) for seq in range(s.base + s.start, s.base + len(s.ids))]

    def sessions(self) -> list[SessionInfo]:
        """A summary of each session held, least recently used first. Runtime complexity: O(sessions)."""
        now = self.clock()
        self._drop_idle(now)
        return [
            SessionInfo(key, len(s), len(s.streams), s.bytes, now - s.created, now - s.used)
            for key, s in self._sessions.items()
        ]

    def snapshot(self) -> HistoryStats:
        """The counters, with current gauges filled in. Runtime complexity: O(1)."""
        self.stats.events = self._events
        self.stats.sessions = len(self._sessions)
        self.stats.bytes = self._bytes
        return self.stats

    def __contains__(self, session: object) -> bool:
        return session in self._sessions

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._sessions))

    # -- the async storage interface (see sse_resume_core._store.HistoryStore) ------------------------------

    async def find(self, session: str, event_id: str) -> Found | None:
        return self.lookup(session, event_id)

    async def forget(self, session: str) -> bool:
        return self.drop_session(session)

    async def list_sessions(self) -> list[SessionInfo]:
        return self.sessions()

    async def list_events(self, session: str) -> list[StoredEvent]:
        return self.events(session)

    # -- internals -------------------------------------------------------------------------------------------

    def _account(self, s: _Session, delta: int) -> None:
        s.bytes += delta
        self._bytes += delta

    def _stream(self, s: _Session, name: str) -> _Stream:
        if len(s.streams) >= self.limits.max_events + MAX_EMPTY_STREAMS:
            # Streams that hold events are at most max_events; the rest were opened and never got one (yet).
            # Drop the oldest of those; a connection still writing to it simply opens it again.
            oldest_empty = next(st for st in s.streams.values() if st.empty())
            self._drop_stream(s, oldest_empty)
        stream = s.streams[name] = _Stream(name, s.next_stream)
        s.streams_by_number[stream.number] = stream
        s.next_stream += 1
        self._account(s, STREAM_OVERHEAD)
        return stream

    def _use(self, key: str, now: float) -> _Session:
        """The session to record into at ``now``: made (or made anew, when idle past the ttl) or marked most
        recently used, and rid of its expired events first (which may drop streams that hold only those)."""
        s = self._sessions.get(key)
        if s is None or now - s.used > self.limits.ttl:
            s = self._touch(key)
        else:
            if s is not self._mru:
                self._sessions.move_to_end(key)
                self._mru = s
            s.used = now
        if s.start < len(s.ids) and s.times[s.start] < now - s.created - self.limits.ttl:
            self._expire_session(s, now)
        return s

    def _touch(self, key: str) -> _Session:
        now = self.clock()
        s = self._sessions.get(key)
        if s is not None and now - s.used > self.limits.ttl:
            self._drop_idle(now)
            s = None
        if s is None:
            s = self._sessions[key] = _Session(key, now, self.limits.replay, self.stats.stored)
            self._bytes += SESSION_OVERHEAD
            self._enforce_global(s)
        else:
            self._sessions.move_to_end(key)
        self._mru = s
        s.used = now
        return s

    def _evict_oldest(self, s: _Session, reason: EvictionReason, count: int = 1) -> None:
        """Evict the session's ``count`` oldest events (it holds at least that many)."""
        # On the hot path once the session is full (one eviction per event recorded), so _cost, _account and
        # _Stream.empty are written out here: calling them made a record ~5% slower (3.05 vs 3.19 us, measured).
        ids = s.ids
        raws = s.raws
        by_number = s.streams_by_number
        stream_of = s.stream_of
        base = s.base
        cost = 0
        start = s.start
        stop = start + count
        if count > 1 and stream_of[start:stop].count(stream_of[start]) == count:
            cost = self._evict_from_one_stream(s, by_number[stream_of[start]], start, stop)
        else:
            for i in range(start, stop):
                event_id = ids[i]
                stream = by_number[stream_of[i]]
                # The session's oldest event is the oldest of its stream too: the front of the list, or of the tail.
                if stream.seqs:
                    stream.seqs.pop(0)
                else:
                    stream.tail.popleft()
                cost += EVENT_OVERHEAD
                if event_id:
                    cost += ID_OVERHEAD + len(event_id)
                    by_id = stream.by_id
                    if by_id.get(event_id) == base + i:
                        del by_id[event_id]
                ids[i] = None
                if raws is not None:
                    cost += PAYLOAD_OVERHEAD + len(raws[i])  # type: ignore[arg-type]  # held events have their bytes
                    raws[i] = None
                if not stream.seqs and not stream.tail:
                    self._drop_stream(s, stream)
        s.bytes -= cost
        self._bytes -= cost
        self._events -= stop - start
        self.stats.evicted[reason] += stop - start
        s.start = start = stop
        if start > 64 and start * 2 > len(ids):  # trim the evicted prefix, amortized O(1) per event
            del ids[:start]
            if raws is not None:
                del raws[:start]
            del s.times[:start]
            del stream_of[:start]
            s.base += start
            s.start = 0

    def _evict_from_one_stream(self, s: _Session, stream: _Stream, start: int, stop: int) -> int:
        """Evict the session's events ``start:stop``, all of ``stream``, with bulk operations; return their cost.
        (A batch recorded by a relay evicts as many events at once, nearly always of a single stream.)"""
        count = stop - start
        seqs = stream.seqs
        from_seqs = min(count, len(seqs))  # the stream's oldest positions: its merged list first, then its tail
        if from_seqs:
            del seqs[:from_seqs]
        tail = stream.tail
        from_tail = count - from_seqs
        if from_tail == len(tail):
            tail.clear()
        elif from_tail:
            deque(map(deque.popleft, repeat(tail, from_tail)), maxlen=0)  # popleft a number of times, in C
        ids = s.ids
        named = list(filter(None, ids[start:stop]))
        # Each held id maps to its own event (ids are held once per stream): drop them all, in one C-level loop.
        deque(map(stream.by_id.pop, named, repeat(None)), maxlen=0)
        cost = count * EVENT_OVERHEAD + len(named) * ID_OVERHEAD + sum(map(len, named))
        ids[start:stop] = [None] * count
        raws = s.raws
        if raws is not None:
            cost += count * PAYLOAD_OVERHEAD + sum(map(len, raws[start:stop]))  # type: ignore[arg-type]
            raws[start:stop] = [None] * count
        if not seqs and not tail:
            self._drop_stream(s, stream)
        return cost

    def _drop_stream(self, s: _Session, stream: _Stream) -> None:
        del s.streams[stream.name]
        del s.streams_by_number[stream.number]
        self._account(s, -STREAM_OVERHEAD)

    def _expire_session(self, s: _Session, now: float) -> None:
        limit = now - s.created - self.limits.ttl
        times = s.times
        while s.start < len(s.ids) and times[s.start] < limit:
            self._evict_oldest(s, "ttl")

    def _drop_idle(self, now: float) -> None:
        limit = now - self.limits.ttl
        while self._sessions:
            key, s = next(iter(self._sessions.items()))
            if s.used >= limit:
                break
            del self._sessions[key]
            self._forget(s, "ttl")

    def _forget(self, s: _Session, reason: EvictionReason | None = None) -> None:
        n = len(s)
        self._events -= n
        self._bytes -= s.bytes
        if reason is not None:
            self.stats.evicted[reason] += n

    def _enforce_global(self, current: _Session | None) -> None:
        limits = self.limits
        while len(self._sessions) > limits.max_sessions:
            _, s = self._sessions.popitem(last=False)
            self._forget(s, "session-lru")
        while self._bytes > limits.max_bytes and self._sessions:
            key, s = next(iter(self._sessions.items()))
            if len(s):
                self._evict_oldest(s, "bytes")
            if not len(s) and (s is not current or self._bytes > limits.max_bytes):
                del self._sessions[key]
                self._forget(s)
                if s is current:
                    break

    def _check(self) -> None:
        """Assert every invariant of the store (for tests). Runtime complexity: O(n log n)."""
        total_bytes = 0
        total_events = 0
        used = [s.used for s in self._sessions.values()]  # idle ones are dropped on the next access
        assert used == sorted(used), "sessions are in least-recently-used order"
        assert len(self._sessions) <= self.limits.max_sessions
        for key, s in self._sessions.items():
            assert s.key == key
            n = len(s.ids)
            assert len(s.times) == n and len(s.stream_of) == n
            assert s.raws is None or len(s.raws) == n
            assert (s.raws is not None) == self.limits.replay
            assert 0 <= s.start <= n
            assert len(s) <= self.limits.max_events
            assert all(s.ids[i] is None for i in range(s.start))
            assert list(s.times[s.start :]) == sorted(s.times[s.start :]), "arrival order"
            expected = SESSION_OVERHEAD + STREAM_OVERHEAD * len(s.streams)
            held: dict[str, list[int]] = {name: [] for name in s.streams}
            for i in range(s.start, n):
                stream = s.streams_by_number[s.stream_of[i]]
                held[stream.name].append(s.base + i)
                expected += _cost(s.ids[i], s.raws[i] if s.raws is not None else None)
                assert s.raws is None or s.raws[i] is not None
                assert s.raws is not None or s.ids[i], "ids-only mode keeps only events with ids"
            assert s.bytes == expected, (s.bytes, expected)
            assert len(s.streams) <= self.limits.max_events + MAX_EMPTY_STREAMS
            for name, st in s.streams.items():
                assert list(st.seqs) + list(st.tail) == held[name], "a stream's positions match the columns"
                for event_id, seq in st.by_id.items():
                    assert s.ids[seq - s.base] == event_id
                ids = [s.ids[seq - s.base] for seq in held[name]]
                named = [i for i in ids if i]
                assert len(named) == len(set(named)), "an id is held once per stream"
                assert set(named) == set(st.by_id)
            assert all(st.number == number for number, st in s.streams_by_number.items())
            assert {st.name for st in s.streams_by_number.values()} == set(s.streams)
            total_bytes += s.bytes
            total_events += len(s)
        assert total_bytes == self._bytes
        assert total_events == self._events

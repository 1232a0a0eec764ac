"""Bounded event history: what the proxy can replay, and what it recognises when an upstream sends it again.

History is kept per *session* (an opaque key the caller derives, for example from ``Mcp-Session-Id``, the
credentials and the upstream URL) and, inside a session, per *stream*: each upstream SSE response is one stream
unless it carries the same events as one already held (see :meth:`MemoryHistory.stream_of`), and a reconnect
that resumes a known id continues the stream that id came from (MCP forbids replaying one stream's events on
another).

An event is known by its id *and* its bytes: SSE does not make ids unique (an upstream may stamp events with the
second they were sent, or number every response from 1), so "the same event again" is the same id with the same
bytes, compared by a CRC-32 of the block as the upstream sent it, beside the id itself.

Each session remembers its events at two depths, newest last:

* the **history**: the last ``max_events`` events, with their payloads (in ids-only mode, without): what a
  reconnecting client can be served from, and what a ``Last-Event-ID`` is looked up in;
* the **memory** behind it: up to ``max_remembered`` events in all (``max_events`` at least) whose id, CRC and
  stream are kept after their payload went. They let a relay recognise the events an upstream that ignores
  ``Last-Event-ID`` sends again, long after their payloads were dropped, and let a lookup tell "the events after
  this id are no longer held" (a gap, served as a resume upstream) from "this id was never seen".

Layout, chosen so that remembering an event costs about 60 bytes beyond its id: columns in arrival order (ids,
CRCs, arrival times, stream numbers, and in replay mode the payloads), numbered by a per-session sequence number;
forgetting and eviction are always oldest first, from the front. A dict maps each id to its newest occurrence
(older ones of a repeated id wait in a small deque beside it). A stream's events after a position are the
columns after it that hold the stream's number, found by a search in C over the history after that position
(at most ``max_events`` columns): no index of its own per stream. Sessions sit in least-recently-used order, so
the global caps drop the coldest first.

Bounds, all enforced on every write: ``max_events`` in the history and ``max_remembered`` in memory per session
(reason ``count``), ``ttl`` seconds per event and per idle session (``ttl``), ``max_sessions`` (``session-lru``)
and ``max_bytes`` across all sessions (``bytes``). Stored bytes are an estimate that errs high: payload and id
lengths plus a measured per-event, per-stream and per-session overhead.
"""

from __future__ import annotations

import time
import zlib
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from itertools import chain, repeat
from typing import Final, Literal

__all__ = [
    "EvictionReason",
    "Found",
    "HistoryLimits",
    "HistoryStats",
    "MemoryHistory",
    "Recorded",
    "SessionInfo",
    "StoredEvent",
    "fingerprint",
]

EvictionReason = Literal["count", "ttl", "session-lru", "bytes"]
REASONS: Final[tuple[EvictionReason, ...]] = ("count", "ttl", "session-lru", "bytes")

fingerprint: Final = zlib.crc32
"""The CRC-32 of an event's bytes: with its id, what tells one event from another (0.5 ns a byte, in C)."""

# Estimated bytes of bookkeeping, measured with tracemalloc on CPython 3.12 (tests/unit/core/test_history.py checks that
# the estimate stays above what is really allocated).
REMEMBER_OVERHEAD: Final = 40  # a remembered event's column slots: id, CRC, time, stream, payload
ID_OVERHEAD: Final = 120  # an id's str object header and its entry in the id dict (its mark is shared)
PAYLOAD_OVERHEAD: Final = 40  # a bytes object's header, in replay mode
STREAM_OVERHEAD: Final = 600  # a stream object, its entries in two dicts
SESSION_OVERHEAD: Final = 1600
SPAN: Final = 64  # events that share one mark in the id dict (see _Session.by_id)
MAX_EMPTY_STREAMS: Final = 16  # streams opened without an event yet, per session, beyond the remembered events


class _Packed(bytes):
    """A payload held compressed (raw deflate): told apart from a plain one by its type, at no cost per event."""

    __slots__ = ()


# Raw deflate at level 1 with a 16 KiB window, as one long-lived compressor whose output is cut into independent
# pieces by a full flush after each event: an event of 1-10 KB takes 0.3-0.5 of its size. (A compressor made for
# each event cost twice the time, setting up its window and hash; zlib's default window saved nothing here.)
_WBITS: Final = -14
_MEM_LEVEL: Final = 6
_SAMPLE: Final = 4096


class _Packer:
    """Compresses the payloads of one history."""

    __slots__ = ("_compress", "_flush")

    def __init__(self) -> None:
        z = zlib.compressobj(1, zlib.DEFLATED, _WBITS, _MEM_LEVEL)
        self._compress = z.compress
        self._flush = z.flush

    def pack(self, raw: bytes) -> bytes:
        """``raw``, compressed if that saves a quarter of it or more. Runtime complexity: O(len(raw)).

        A large event is judged by its first 4 KiB first: an image in base64 or other packed data is then left
        as it is for the cost of 4 KiB, not of a megabyte.
        """
        compress, flush = self._compress, self._flush
        if len(raw) > 4 * _SAMPLE and len(compress(raw[:_SAMPLE]) + flush(zlib.Z_FULL_FLUSH)) * 4 > _SAMPLE * 3:
            return raw
        packed = compress(raw) + flush(zlib.Z_FULL_FLUSH)
        return _Packed(packed) if len(packed) * 4 <= len(raw) * 3 else raw


def _unpack(held: bytes) -> bytes:
    """The payload as recorded. (It decompresses to the bytes the proxy compressed itself: bounded by them.)"""
    return zlib.decompressobj(_WBITS).decompress(held) if type(held) is _Packed else held


class Recorded(Enum):
    """What :meth:`MemoryHistory.record` did with an event."""

    NEW = "new"
    """Stored (or, in ids-only mode, its id remembered)."""
    DUPLICATE = "duplicate"
    """The stream holds this event already (same id, same bytes): the first occurrence stands, nothing is stored."""
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
    max_remembered: int = 100_000
    compress_from: int = 1024
    """Payloads of at least this many bytes are held compressed where that saves a quarter (0: never)."""

    @property
    def remembered(self) -> int:
        """Events remembered per session, those in the history included."""
        return max(self.max_events, self.max_remembered)


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
    """The events of the stream after the id that the history holds (all of them when :attr:`complete`)."""
    newest_id: str
    """The newest non-empty id remembered for the stream: what to ask an upstream to resume from."""
    complete: bool = True
    """False when events of the stream after the id were evicted from the history (remembered, not held)."""
    ambiguous: int = 0
    """When more than one remembered event of the session carries the id: how many (the id names none of them;
    :attr:`stream`, :attr:`seq` and :attr:`after` then say nothing)."""
    forgotten: bool = False
    """Events of the session are no longer remembered (past ``max_remembered``, the ttl or the byte cap): an
    upstream that starts over may send them again, and they cannot be recognised; nor can other occurrences of
    the id that were forgotten."""


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
    """Counters a caller can export. ``stored`` and ``evicted`` only grow; ``evicted`` counts events that left
    the history (their payloads), whether or not their ids are still remembered."""

    stored: int = 0
    evicted: dict[EvictionReason, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    events: int = 0
    sessions: int = 0
    bytes: int = 0


class _Stream:
    __slots__ = ("count", "forgotten", "lost", "name", "newest_id", "number")

    def __init__(self, name: str, number: int) -> None:
        self.name = name
        # What the session's stream column holds for this stream's events: the one record of which events are
        # its own (an array of their numbers beside it cost 8 bytes an event, an eighth of an ids-only event).
        self.number = number
        self.count = 0  # events remembered (in the history or behind it)
        self.newest_id = ""
        self.lost = -1  # the newest sequence number of this stream's events evicted from the history
        self.forgotten = False  # some of its events are no longer remembered


class _Session:
    __slots__ = (
        "base",
        "by_id",
        "bytes",
        "crcs",
        "created",
        "forgotten",
        "held",
        "ids",
        "key",
        "mark",
        "next_stream",
        "older",
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
        # Column i holds event number base + i. Columns [0, start) are forgotten (trimmed lazily), [start, held)
        # remembered, [held, len) in the history. A new session starts above every number the store has given
        # out, so numbers are unique store-wide.
        self.base = base
        self.start = 0
        self.held = 0
        self.ids: list[str | None] = []
        self.crcs = array("I")  # CRC-32 of each event's bytes (0 for events without id: never compared)
        self.raws: list[bytes | None] | None = [] if replay else None
        # Arrival times as float32 seconds since the session was created: 4 bytes an event, precise to well
        # under a second for sessions younger than a month (an idle session is dropped after ttl anyway).
        self.times = array("f")
        self.stream_of = array("I")
        self.streams: dict[str, _Stream] = {}
        self.streams_by_number: dict[int, _Stream] = {}
        self.next_stream = 1
        # id -> a *mark* of its newest remembered occurrence: a sequence number at most SPAN - 1 before it, with
        # no event of that id in between (see seq_of). Events recorded one after the other share one mark (an
        # int object) per SPAN: an int of their own would be 32 bytes an event, a third of what remembering an
        # id costs. The marks of the older occurrences of an id seen more than once, oldest first (rare: only an
        # upstream that repeats ids fills it).
        self.by_id: dict[str, int] = {}
        self.older: dict[str, deque[int]] = {}
        self.mark = base - SPAN  # the mark of the events record() adds now
        self.forgotten = 0  # its events no longer remembered (an id's other occurrences may be among them)
        self.bytes = SESSION_OVERHEAD
        self.created = now
        self.used = now

    def __len__(self) -> int:
        """Events in the history."""
        return len(self.ids) - self.held

    def remembered(self) -> int:
        return len(self.ids) - self.start

    def event(self, seq: int) -> StoredEvent:
        i = seq - self.base
        stream = self.streams_by_number[self.stream_of[i]]
        raw = _unpack(self.raws[i]) if self.raws is not None else None  # type: ignore[arg-type]  # held: not None
        return StoredEvent(seq, stream.name, self.ids[i], raw, self.created + self.times[i])

    def after(self, stream: _Stream, seq: int) -> list[int]:
        """The sequence numbers of ``stream``'s events in the history after ``seq``, oldest first. Runtime
        complexity: O(k) searches in C that together cover the history after ``seq`` once (at most
        ``max_events`` columns; an event of the session's other streams costs a nanosecond or so)."""
        base = self.base
        column = self.stream_of
        number = stream.number
        index = column.index
        i = max(seq + 1 - base, self.held)
        end = len(column)
        found: list[int] = []
        while i < end:
            try:
                i = index(number, i)
            except ValueError:  # none after i
                break
            found.append(base + i)
            i += 1
        return found

    def seq_of(self, event_id: str, mark: int) -> int:
        """The sequence number of the remembered event with this id that ``mark`` marks: the first at or after
        it. Runtime complexity: O(SPAN) at most, in C."""
        base = self.base
        i = mark - base
        return base + self.ids.index(event_id, i if i > 0 else 0, i + SPAN)

    def occurrences(self, event_id: str) -> Iterator[int]:
        """The sequence numbers of the remembered events with this id, newest first."""
        newest = self.by_id.get(event_id)
        if newest is None:
            return
        yield self.seq_of(event_id, newest)
        older = self.older.get(event_id)
        if older:
            for mark in reversed(older):
                yield self.seq_of(event_id, mark)

    def find(self, stream: _Stream, event_id: str, crc: int) -> int | None:
        """The sequence number of the remembered event of ``stream`` with this id and CRC, if any."""
        base = self.base
        number = stream.number
        for seq in self.occurrences(event_id):
            i = seq - base
            if self.stream_of[i] == number and self.crcs[i] == crc:
                return seq
        return None


class MemoryHistory:
    """The in-memory history store. Sans-I/O: time comes from ``clock`` (``time.monotonic`` by default).

    >>> h = MemoryHistory(HistoryLimits(max_events=3, max_remembered=5))
    >>> s = h.new_stream("session")
    >>> for n in "123456":
    ...     _ = h.record("session", s, n, f"id: {n}\\ndata: x\\n\\n".encode())
    >>> found = h.lookup("session", "4")
    >>> [e.id for e in found.after], found.newest_id, found.complete
    (['5', '6'], '6', True)
    >>> h.lookup("session", "2").complete  # remembered, but 3 left the history: a gap
    False
    >>> h.lookup("session", "1") is None  # forgotten: the session remembers 5 events
    True
    >>> h.record("session", s, "2", b"id: 2\\ndata: x\\n\\n")  # the same event again
    <Recorded.DUPLICATE: 'duplicate'>
    """

    def __init__(self, limits: HistoryLimits | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or HistoryLimits()
        self.clock = clock
        self._sessions: OrderedDict[str, _Session] = OrderedDict()  # least recently used first
        self._bytes = 0
        self._events = 0  # events in the histories
        self._mru: _Session | None = None  # the session last moved to the end of the LRU order
        self.stats = HistoryStats()
        self._packer = _Packer()

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

    def record(
        self, session: str, stream: str, event_id: str | None, raw: bytes, *, crc: int | None = None
    ) -> Recorded:
        """Record one event of ``stream``, in arrival order. Runtime complexity: O(1) amortized.

        ``event_id`` is the block's own ``id`` field (``None`` without one, ``""`` for a reset). An event the
        stream remembers already (same id, same bytes) is not recorded again. In ids-only mode the payload is not
        kept, and an event without id is not recorded at all. Oldest events are evicted as the bounds require.
        ``crc``: the event's :data:`fingerprint`, when the caller knows it without its bytes (a store that copies
        an ids-only history from elsewhere); ``raw`` is then not read for it.
        """
        limits = self.limits
        now = self.clock()
        s = self._use(session, now)
        raws = s.raws
        if raws is None and not event_id:
            return Recorded.SKIPPED
        st = s.streams.get(stream) or self._stream(s, stream)
        cost = REMEMBER_OVERHEAD
        prior = None
        if not event_id:
            crc = 0
        else:
            crc = fingerprint(raw) if crc is None else crc
            prior = s.by_id.get(event_id)
            if prior is not None and s.find(st, event_id, crc) is not None:
                return Recorded.DUPLICATE
            cost += ID_OVERHEAD + len(event_id)
        if raws is not None:
            if limits.compress_from and len(raw) >= limits.compress_from:
                raw = self._packer.pack(raw)
            raws.append(raw)
            cost += PAYLOAD_OVERHEAD + len(raw)
        ids = s.ids
        seq = s.base + len(ids)
        ids.append(event_id)
        s.crcs.append(crc)
        s.times.append(now - s.created)
        s.stream_of.append(st.number)
        st.count += 1
        if event_id:
            if prior is not None:  # its own number marks it: an earlier occurrence may be just before it
                s.older.setdefault(event_id, deque()).append(prior)
                s.by_id[event_id] = seq
            else:
                if seq - s.mark >= SPAN:
                    s.mark = seq
                s.by_id[event_id] = s.mark
            st.newest_id = event_id
        s.bytes += cost
        self._bytes += cost
        self._events += 1
        self.stats.stored += 1
        if len(ids) - s.held > limits.max_events:
            self._evict(s, "count")
        if len(ids) - s.start > limits.remembered:
            self._forget_front(s, "count")
        if self._bytes > limits.max_bytes:
            self._enforce_global(s)
        return Recorded.NEW

    def record_many(self, session: str, stream: str, event_ids: list[str | None], raws: list[bytes]) -> None:
        """Record several events of ``stream`` at once, in order: what :meth:`record` of each would do.

        The relay's batches: bulk list operations instead of one call per event. Events that :meth:`record`
        would treat one by one (an id repeated or already remembered, an id-less event in ids-only mode) take
        that path. Runtime complexity: O(k) amortized for k events (plus the evictions they cause).
        """
        n = len(event_ids)
        limits = self.limits
        now = self.clock()
        s = self._sessions.get(session)
        st = None if s is None else s.streams.get(stream)
        if n >= 2 and s is not None and st is not None and now - s.used <= limits.ttl:
            self._use(session, now)  # marks it used, and expires old events: the stream may go with them
            every = all(event_ids)  # the usual batch: every event has an id
            if s.streams.get(stream) is st and (every or s.raws is not None):  # ids-only keeps no id-less event
                first = s.base + len(s.ids)
                marks = range(first, first + n, SPAN)  # one per SPAN events of the batch
                named: list[str]
                if every:
                    named = event_ids  # type: ignore[assignment]  # none is None
                    marked: Iterable[int] = chain.from_iterable(map(repeat, marks, repeat(SPAN)))
                else:
                    named = [e for e in event_ids if e]
                    marked = [marks[k // SPAN] for k, e in enumerate(event_ids) if e]
                # Each id enters the id dict unless it is there already (remembered, or earlier in the batch), in
                # one pass in C; the dict then grew by one an id exactly when none was known. (A separate
                # isdisjoint() check, a dict of the batch and an update() cost 3.3 times as much: 500 against
                # 150 ns an event, with the default 100,000 ids remembered, batches of 250.)
                by_id = s.by_id
                size = len(by_id)
                deque(map(by_id.setdefault, named, marked), maxlen=0)
                if len(by_id) - size == len(named):
                    self._append(s, st, event_ids, raws, now, named)
                    return
                # Some id was known: take back the ids this pass put in (their marks are this batch's, above every
                # earlier one), and record one by one, as record() does.
                for name in named:
                    if by_id.get(name, -1) >= first:
                        del by_id[name]
        for event_id, raw in zip(event_ids, raws, strict=True):
            self.record(session, stream, event_id, raw)

    def _append(
        self,
        s: _Session,
        st: _Stream,
        event_ids: list[str | None],
        raws: list[bytes],
        now: float,
        named: list[str],
    ) -> None:
        """The bulk part of :meth:`record_many`: new events of one stream, numbered on from the session's last,
        none of their ids remembered before (``named``: those ids, in order, which the id dict maps to their marks
        already)."""
        limits = self.limits
        n = len(event_ids)
        ids = s.ids
        ids.extend(event_ids)
        if len(named) == n:
            s.crcs.extend(array("I", map(fingerprint, raws)))
        else:
            s.crcs.extend(array("I", (fingerprint(raw) if i else 0 for i, raw in zip(event_ids, raws, strict=True))))
        cost = n * REMEMBER_OVERHEAD + len(named) * ID_OVERHEAD + sum(map(len, named))
        if s.raws is not None:
            least = limits.compress_from
            if least and max(map(len, raws)) >= least:
                pack = self._packer.pack
                raws = [pack(raw) if len(raw) >= least else raw for raw in raws]
            s.raws.extend(raws)
            cost += n * PAYLOAD_OVERHEAD + sum(map(len, raws))
        s.times.extend(array("f", (now - s.created,)) * n)  # (arrays repeat and extend by copying memory)
        s.stream_of.extend(array("I", (st.number,)) * n)
        st.count += n
        if named:
            st.newest_id = named[-1]
        s.bytes += cost
        self._bytes += cost
        self._events += n
        self.stats.stored += n
        excess = len(ids) - s.held - limits.max_events
        if excess > 0:
            self._evict(s, "count", excess)
        excess = len(ids) - s.start - limits.remembered
        if excess > 0:
            self._forget_front(s, "count", excess)
        if self._bytes > limits.max_bytes:
            self._enforce_global(s)

    def drop_session(self, session: str) -> bool:
        """Forget a session whole. Runtime complexity: O(1) (plus freeing its events)."""
        s = self._sessions.pop(session, None)
        if s is None:
            return False
        self._drop(s)
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
            if len(s) > limits.max_events:
                self._evict(s, "count", len(s) - limits.max_events)
            if s.remembered() > limits.remembered:
                self._forget_front(s, "count", s.remembered() - limits.remembered)
        self._enforce_global(None)

    def expire(self) -> None:
        """Drop idle sessions and expired events now. Runtime complexity: O(sessions + expired events)."""
        now = self.clock()
        self._drop_idle(now)
        for s in list(self._sessions.values()):
            self._expire_session(s, now)

    # -- reading ---------------------------------------------------------------------------------------------

    def lookup(self, session: str, event_id: str) -> Found | None:
        """Find ``event_id`` in ``session``: its stream and the events the history holds after it there.

        Runtime complexity: O(log n + k) for k events after it, plus merging what was recorded since the last
        lookup. ``None`` when the id is not remembered (never seen, forgotten, expired, or empty). An id that
        more than one remembered event carries (an upstream that numbers every response from 1, or stamps ids
        by the second) names none of them: :attr:`Found.ambiguous` says so.
        """
        s = self._sessions.get(session)
        if s is None or not event_id:
            return None
        now = self.clock()
        if now - s.used > self.limits.ttl:
            self._drop_idle(now)
            return None
        self._expire_session(s, now)
        mark = s.by_id.get(event_id)
        if mark is None:
            return None
        seq = s.seq_of(event_id, mark)
        older = s.older.get(event_id)
        if older:
            return Found("", seq, (), "", complete=False, ambiguous=len(older) + 1)
        st = s.streams_by_number[s.stream_of[seq - s.base]]
        after = tuple(map(s.event, s.after(st, seq)))
        forgotten = st.forgotten or s.forgotten > 0
        return Found(st.name, seq, after, st.newest_id, complete=st.lost <= seq, forgotten=forgotten)

    def position(self, session: str, stream: str, event_id: str, raw: bytes, *, crc: int | None = None) -> int | None:
        """The sequence number of the event of ``stream`` with this id and these bytes (or this ``crc``, their
        :data:`fingerprint`), if remembered. Runtime complexity: O(1) (O(r) for an id seen r times).

        Sequence numbers grow with arrival and are never reused, even by a session created again later.
        """
        s = self._sessions.get(session)
        if s is None or event_id not in s.by_id:
            return None
        st = s.streams.get(stream)
        return None if st is None else s.find(st, event_id, fingerprint(raw) if crc is None else crc)

    def stream_of(self, session: str, event_id: str, raw: bytes) -> str | None:
        """The one stream of ``session`` that remembers this event (same id, same bytes), if exactly one does:
        a new upstream response that starts with it carries the same stream again (an upstream that restarts
        every response, or a feed several clients of one session read). Runtime complexity: O(1) (O(r))."""
        s = self._sessions.get(session)
        if s is None or not event_id:
            return None
        crc = fingerprint(raw)
        found = {s.stream_of[seq - s.base] for seq in s.occurrences(event_id) if s.crcs[seq - s.base] == crc}
        if len(found) != 1:
            return None
        return s.streams_by_number[found.pop()].name

    def forgotten(self, session: str) -> int:
        """How many events of ``session`` it no longer remembers: a count that only grows while the session
        lives (0 for a session it does not hold). Runtime complexity: O(1)."""
        s = self._sessions.get(session)
        return 0 if s is None else s.forgotten

    def forgot(self, session: str, stream: str) -> None:
        """Say that ``stream`` began before the events it holds (a stream adopted from a store that trimmed it):
        a lookup in it then says :attr:`Found.forgotten`."""
        s = self._sessions.get(session)
        st = None if s is None else s.streams.get(stream)
        if st is not None:
            st.forgotten = True

    def newest_id(self, session: str, stream: str) -> str:
        """The newest non-empty id remembered for ``stream``, or ``""``. Runtime complexity: O(1)."""
        s = self._sessions.get(session)
        st = None if s is None else s.streams.get(stream)
        return "" if st is None else st.newest_id

    def events(self, session: str) -> list[StoredEvent]:
        """Every event in the history of ``session``, oldest first. Runtime complexity: O(n)."""
        s = self._sessions.get(session)
        if s is None:
            return []
        self._expire_session(s, self.clock())
        return [s.event(seq) for seq in range(s.base + s.held, s.base + len(s.ids))]

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

    # -- the storage interface's coroutines and life cycle (see sse_resume_core._store.HistoryStore) ----------

    async def find(self, session: str, event_id: str) -> Found | None:
        return self.lookup(session, event_id)

    def health(self) -> None:
        """A memory store has no remote side."""

    def start(self) -> None:
        """Nothing runs in the background of a memory store."""

    async def aclose(self) -> None:
        """Nothing to write anywhere."""

    # -- internals -------------------------------------------------------------------------------------------

    def _account(self, s: _Session, delta: int) -> None:
        s.bytes += delta
        self._bytes += delta

    def _stream(self, s: _Session, name: str) -> _Stream:
        if len(s.streams) >= self.limits.remembered + MAX_EMPTY_STREAMS:
            # Streams that remember events are at most as many as the events; the rest were opened and never got
            # one (yet). Drop the oldest of those; a connection still writing to it simply opens it again.
            oldest_empty = next(st for st in s.streams.values() if not st.count)
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

    def _evict(self, s: _Session, reason: EvictionReason, count: int = 1) -> None:
        """Evict the ``count`` oldest events of the session's history (it holds at least that many): their
        payloads go, their ids stay remembered."""
        # On the hot path once the session is full (one eviction per event recorded), so the costs are written
        # out here: calling helpers made a record ~5% slower (measured).
        raws = s.raws
        by_number = s.streams_by_number
        stream_of = s.stream_of
        base = s.base
        start = s.held
        stop = start + count
        cost = 0
        if count > 1 and stream_of[start:stop].count(stream_of[start]) == count:
            # (A batch recorded by a relay evicts as many events at once, nearly always of a single stream.)
            by_number[stream_of[start]].lost = base + stop - 1
        else:
            for i in range(start, stop):
                by_number[stream_of[i]].lost = base + i
        if raws is not None:
            cost += count * PAYLOAD_OVERHEAD + sum(map(len, raws[start:stop]))  # type: ignore[arg-type]
            raws[start:stop] = [None] * count
        s.held = stop
        s.bytes -= cost
        self._bytes -= cost
        self._events -= count
        self.stats.evicted[reason] += count

    def _forget_front(self, s: _Session, reason: EvictionReason, count: int = 1) -> None:
        """Forget the session's ``count`` oldest remembered events (evicting them from the history first if they
        are still in it)."""
        start = s.start
        stop = start + count
        if stop > s.held:
            self._evict(s, reason, stop - s.held)
        ids = s.ids
        by_id = s.by_id
        older = s.older
        by_number = s.streams_by_number
        stream_of = s.stream_of
        cost = count * REMEMBER_OVERHEAD
        if count > 1 and stream_of[start:stop].count(stream_of[start]) == count and not older:
            # The usual case, in bulk: one stream, no repeated id. Each id maps to its own event: drop them all.
            stream = by_number[stream_of[start]]
            named = list(filter(None, ids[start:stop]))
            deque(map(by_id.pop, named, repeat(None)), maxlen=0)
            cost += len(named) * ID_OVERHEAD + sum(map(len, named))
            stream.count -= count
            stream.forgotten = True
            if not stream.count:
                self._drop_stream(s, stream)
        else:
            for i in range(start, stop):
                event_id = ids[i]
                stream = by_number[stream_of[i]]
                if event_id:
                    cost += ID_OVERHEAD + len(event_id)
                    earlier = older.get(event_id)
                    if earlier:  # this is the oldest occurrence of a repeated id
                        earlier.popleft()
                        if not earlier:
                            del older[event_id]
                    else:  # its one remembered occurrence
                        del by_id[event_id]
                stream.count -= 1
                stream.forgotten = True
                if not stream.count:
                    self._drop_stream(s, stream)
        ids[start:stop] = [None] * count
        s.forgotten += count
        s.bytes -= cost
        self._bytes -= cost
        s.start = start = stop
        if start > 64 and start * 2 > len(ids):  # trim the forgotten prefix, amortized O(1) per event
            del ids[:start]
            if s.raws is not None:
                del s.raws[:start]
            del s.crcs[:start]
            del s.times[:start]
            del stream_of[:start]
            s.base += start
            s.held -= start
            s.start = 0

    def _drop_stream(self, s: _Session, stream: _Stream) -> None:
        del s.streams[stream.name]
        del s.streams_by_number[stream.number]
        self._account(s, -STREAM_OVERHEAD)

    def _expire_session(self, s: _Session, now: float) -> None:
        limit = now - s.created - self.limits.ttl
        times = s.times
        start = s.start
        stop = start
        n = len(s.ids)
        while stop < n and times[stop] < limit:
            stop += 1
        if stop > start:
            self._forget_front(s, "ttl", stop - start)

    def _drop_idle(self, now: float) -> None:
        limit = now - self.limits.ttl
        while self._sessions:
            key, s = next(iter(self._sessions.items()))
            if s.used >= limit:
                break
            del self._sessions[key]
            self._drop(s, "ttl")

    def _drop(self, s: _Session, reason: EvictionReason | None = None) -> None:
        n = len(s)
        self._events -= n
        self._bytes -= s.bytes
        if reason is not None:
            self.stats.evicted[reason] += n

    def _enforce_global(self, current: _Session | None) -> None:
        limits = self.limits
        while len(self._sessions) > limits.max_sessions:
            _, s = self._sessions.popitem(last=False)
            self._drop(s, "session-lru")
        while self._bytes > limits.max_bytes and self._sessions:
            key, s = next(iter(self._sessions.items()))
            if s.remembered():
                # The oldest first: what is only remembered goes before what the history holds.
                self._forget_front(s, "bytes", min(s.remembered(), 64))
            if not s.remembered() and (s is not current or self._bytes > limits.max_bytes):
                del self._sessions[key]
                self._drop(s)
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
            assert len(s.times) == n and len(s.stream_of) == n and len(s.crcs) == n
            assert s.raws is None or len(s.raws) == n
            assert (s.raws is not None) == self.limits.replay
            assert 0 <= s.start <= s.held <= n
            assert len(s) <= self.limits.max_events
            assert s.remembered() <= self.limits.remembered
            assert all(s.ids[i] is None for i in range(s.start))
            assert s.raws is None or all(s.raws[i] is None for i in range(s.held))
            assert list(s.times[s.start :]) == sorted(s.times[s.start :]), "arrival order"
            expected = SESSION_OVERHEAD + STREAM_OVERHEAD * len(s.streams)
            held: dict[str, list[int]] = {name: [] for name in s.streams}
            counts: dict[str, int] = dict.fromkeys(s.streams, 0)
            occurrences: dict[str, list[int]] = {}
            for i in range(s.start, n):
                stream = s.streams_by_number[s.stream_of[i]]
                counts[stream.name] += 1
                event_id = s.ids[i]
                expected += REMEMBER_OVERHEAD
                if event_id:
                    expected += ID_OVERHEAD + len(event_id)
                    occurrences.setdefault(event_id, []).append(s.base + i)
                    if s.raws is not None and i >= s.held:
                        assert s.crcs[i] == fingerprint(_unpack(s.raws[i] or b"")), "a held event's CRC is its bytes'"
                if i >= s.held:
                    held[stream.name].append(s.base + i)
                    if s.raws is not None:
                        raw = s.raws[i]
                        assert raw is not None
                        expected += PAYLOAD_OVERHEAD + len(raw)
                assert s.raws is not None or s.ids[i], "ids-only mode keeps only events with ids"
            assert s.bytes == expected, (s.bytes, expected)
            assert len(s.streams) <= self.limits.remembered + MAX_EMPTY_STREAMS
            for event_id, seqs in occurrences.items():
                assert s.seq_of(event_id, s.by_id[event_id]) == seqs[-1]
                assert [s.seq_of(event_id, mark) for mark in s.older.get(event_id, ())] == seqs[:-1]
            assert set(s.by_id) == set(occurrences)
            assert all(s.older.values()), "no empty deque of older occurrences"
            for name, st in s.streams.items():
                assert s.after(st, s.base - 1) == held[name], "a stream's events are the columns with its number"
                assert st.count == counts[name]
            assert all(st.number == number for number, st in s.streams_by_number.items())
            assert {st.name for st in s.streams_by_number.values()} == set(s.streams)
            total_bytes += s.bytes
            total_events += len(s)
        assert total_bytes == self._bytes
        assert total_events == self._events

"""Resume decisions and the relay of one upstream stream. Sans-I/O: strings and bytes in, decisions and bytes out.

A reconnecting client sends ``Last-Event-ID: X``. :meth:`Resumer.decide` looks X up in the client's session:

* **hit**: X is held and events with ids follow it in X's stream. Either answer at once from history (the caller
  sends :attr:`Decision.body` as a complete response), ending with a short ``retry`` so the client comes straight
  back for the live stream; or, *inline*, forward upstream from the newest id held and put the missed events in
  front of the first upstream bytes (one response, but it waits for the upstream to send something);
* **up-to-date**: X is held and nothing newer is: forward upstream with the newest id held for the stream;
* **behind**: X is remembered, newer events of its stream went by, but their payloads are not held (ids-only mode,
  or evicted from the history): forward with X itself, and drop what the client has of what the upstream sends;
* **miss**: X is not remembered (never seen, forgotten, expired, garbage), or names more than one event (an
  upstream that repeats ids): forward X unchanged (policy ``forward``) or without the header (policy
  ``restart``), telling the client with a comment at the start of the stream.

:class:`Relay` then carries one upstream response to one client: it parses, records into the history, and drops
what that client already has: the events of its stream at or before its resume position, and the events it got
on this connection already (an event is its id and its bytes: see :mod:`sse_resume_core._history`). Its output is
block-aligned: a block is handed on once complete, so a duplicate can still be dropped.

The keeper (keep mode) takes the same decisions from :meth:`Resumer.decide` and words them with the same notes.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final, Literal

from sse_resume_core._history import Found, StoredEvent
from sse_resume_core._identity import digest, session_key  # (here too, where they used to live)
from sse_resume_core._mcp import LEGACY_ENDPOINT_EVENT
from sse_resume_core._parser import Block, BlockKind, SSEParser, cut_at_blocks, plain_batch, single_event_id
from sse_resume_core._store import HistoryStore
from sse_resume_core._view import Transcript, TranscriptBudget

__all__ = [
    "PROXY_ID_PREFIX",
    "Charge",
    "Decision",
    "Outcome",
    "Relay",
    "RelayStats",
    "ReplayBudget",
    "ResumeStats",
    "Resumer",
    "describe",
    "digest",
    "is_proxy_id",
    "session_key",
]

Outcome = Literal["fresh", "hit", "up-to-date", "behind", "miss"]

BATCH: Final = 1024  # events a relay records at once, at most (see Relay.flush)
BIG_CHUNK: Final = 64 * 1024  # bytes: a larger chunk is not held for a batch, but recorded with what is pending
_NOTE_ROOM: Final = 256  # bytes of a replay's own comment and retry, at most (counted in its part)
MAX_TRACKED: Final = 10_000  # streams whose retry / pending restore is remembered, least recent dropped
_EVENT: Final = BlockKind.EVENT
_EMPTY: Final = BlockKind.EMPTY
_OVERSIZE: Final = BlockKind.OVERSIZE
_BOM: Final = BlockKind.BOM
_UNKNOWN: Final = "unknown"
PROXY_ID_PREFIX: Final = "sse-resume."
"""Ids the proxy makes (keep mode, ``sse_assign_ids``) start with this: ``sse-resume.<stream>.<n>``. They are
never sent upstream."""
_AMBIGUOUS: Final = "names %d events of this session (the upstream repeats ids)"
_FORGOTTEN: Final = (
    "earlier events of this session are no longer remembered (sse_max_remembered_ids): an upstream that starts "
    "over may send them again"
)
FORGOTTEN_NOTE: Final = b": sse-resume: %s\n\n" % _FORGOTTEN.encode()
"""What a client is told, first, when its session has forgotten events (see _warned and Relay._new_to_client)."""


def is_proxy_id(event_id: str | None) -> bool:
    """True when ``event_id`` was made by the proxy (so the upstream has never heard of it)."""
    return bool(event_id) and event_id.startswith(PROXY_ID_PREFIX)  # type: ignore[union-attr]


class Charge:
    """The bytes of one replay, counted against a :class:`ReplayBudget` until :meth:`release` (idempotent)."""

    __slots__ = ("_budget", "size")

    def __init__(self, budget: ReplayBudget | None, size: int) -> None:
        self._budget = budget
        self.size = size

    @property
    def held(self) -> bool:
        return self._budget is not None

    def release(self) -> None:
        budget, self._budget = self._budget, None
        if budget is not None:
            budget.held -= self.size
            budget.replays -= 1


class ReplayBudget:
    """The bytes of replays in flight, across all clients: each replay is at most ``per_replay`` bytes, and all
    of them together at most ``in_flight``. A replay that does not fit is served smaller, down to one event (so
    past the bound each replay holds one event at most); it is never refused.

    A replay counts from when it is built until its holder releases it (see :class:`Charge`): the caller knows
    when the proxy no longer holds its bytes."""

    __slots__ = ("held", "in_flight", "per_replay", "replays", "shortened")

    def __init__(self, per_replay: int = 8 * 1024 * 1024, in_flight: int = 256 * 1024 * 1024) -> None:
        self.per_replay = per_replay
        self.in_flight = in_flight
        self.held = 0
        """Bytes of the replays charged and not released."""
        self.replays = 0
        """Replays charged and not released."""
        self.shortened = 0
        """Replays served in a smaller part than they would have been without the in-flight bound."""

    def room(self) -> int:
        """Bytes a new replay may take now (0: one event only)."""
        return max(0, min(self.per_replay, self.in_flight - self.held))

    def charge(self, size: int) -> Charge:
        self.held += size
        self.replays += 1
        return Charge(self, size)


def fitting(events: tuple[StoredEvent, ...], room: int, overhead: int = 0, start: int = 0) -> int:
    """How many of ``events`` (from ``start``) a part of ``room`` bytes serves: as many as fit, with
    ``overhead`` bytes of the proxy's own, ending with an event that has an id (so that the client's
    ``Last-Event-ID`` after it is a position held); at least up to the first event with an id."""
    size = overhead
    best = 0
    for i in range(start, len(events)):
        event = events[i]
        size += len(event.raw or b"")
        if event.id:
            if size <= room or not best:
                best = i + 1 - start
            if size > room:
                break
    return best or len(events) - start


def _warned(decision: Decision, found: Found) -> Decision:
    """The decision, telling the client (in its note, and a comment first) when its session has forgotten events
    (see :attr:`Found.forgotten`): an upstream that starts over would repeat what the proxy cannot recognise.

    Nor is the client's position then a safe rule for what it has: an event forgotten and sent again is recorded
    anew, after events that follow it in the upstream's order, so the client's id can stand after events it never
    got. Nothing is dropped by position (what the client has may come again, as it was told), never one lost."""
    if not found.forgotten:
        return decision
    comment = FORGOTTEN_NOTE
    body = decision.body
    if body:
        first = body.index(b"\n\n") + 2  # after the replay's own comment
        body = body[:first] + comment + body[first:]
    prefix = comment + decision.prefix if decision.prefix or not body else decision.prefix
    return replace(decision, note=f"{decision.note}; {_FORGOTTEN}", body=body, prefix=prefix, resume_seq=None)


def describe(decision: Decision, shown_id: str) -> str:
    """The decision in words for the flow's comment, with the client's id as the caller may show it (the note,
    which goes to logs and streams too, never carries an id). Beside the notes of :class:`Resumer`: the one
    place a decision is worded."""
    words = _described(decision, shown_id)
    return f"{words}; {_FORGOTTEN}" if _FORGOTTEN in decision.note else words


def _described(decision: Decision, shown_id: str) -> str:
    outcome = decision.outcome
    if outcome == "hit":
        n = len(decision.replay)
        words = f"served {n} event{'s' if n != 1 else ''} from history after id {shown_id}"
        return words if decision.body else words + ", then the live stream"
    if outcome == "miss":
        done = "restarted the stream upstream" if decision.forward_id is None else "forwarded upstream"
        why = decision.note.removeprefix("Last-Event-ID ").partition(":")[0]  # unknown, or names N events ...
        return f"Last-Event-ID {shown_id} {why}: {done}"
    if outcome == "up-to-date":
        return f"resumed upstream after id {shown_id} (nothing newer held)"
    if outcome == "behind":
        why = decision.note.partition(":")[0]
        return f"resumed upstream after id {shown_id}: {why}"
    return ""


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one request, and why."""

    outcome: Outcome
    session: str
    stream: str | None = None
    """The stream an upstream response continues; ``None`` opens a new one."""
    forward_id: str | None = None
    """The ``Last-Event-ID`` to send upstream; ``None`` sends none."""
    resume_seq: int | None = None
    """The client's position in :attr:`stream`: events at or before it are duplicates for this client (None: no
    such rule, as after a miss, or in a session that has forgotten events)."""
    replay: tuple[StoredEvent, ...] = ()
    body: bytes = b""
    """For a hit: the complete response body."""
    prefix: bytes = b""
    """Bytes to put before the first upstream bytes (a comment, a restored ``retry``)."""
    note: str = ""
    """What happened, in words a user understands (no payloads, no raw ids)."""
    charge: Charge | None = None
    """For a hit: the replay's bytes, counted against the replay budget until the caller releases them."""
    held_back: int = 0
    """For a hit served in part: the events after it, left for the next response (or, inline, the upstream)."""


class Window:
    """The events delivered lately on one connection, by a hash of their bytes (which hold their id): the one
    dedupe window. It catches an upstream that sends an event again within one response; what a resuming client
    had before is the history's to know (see :meth:`Relay._new_to_client`).

    The keys are held in a set to look up and a list in order, cut back to the last ``size`` in bulk (every
    BATCH keys, and by :meth:`trim`), so up to ``size + BATCH`` are held at times. (Cutting one key per event
    made the window cost 1.6 times as much; a dict used as a FIFO would be shorter, but finding its oldest key
    scans past the deleted ones: 3.6x slower.)
    """

    __slots__ = ("keys", "limit", "order", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.limit = size + BATCH
        """Keys held at most: past it, :meth:`trim`."""
        self.keys: set[int] = set()
        self.order: list[int] = []

    def add(self, key: int) -> bool:
        """Note an event delivered; False when it was delivered already (a duplicate). Runtime complexity: O(1)
        amortized. (The relay's hot path does the same inline: see :meth:`Relay.pipe`.)"""
        keys = self.keys
        if key in keys:
            return False
        keys.add(key)
        order = self.order
        order.append(key)
        if len(order) >= self.limit:
            self.trim()
        return True

    def add_all(self, keys: list[int]) -> bool:
        """:meth:`add` for several at once, when none was delivered already and none repeats among them; else
        False, and none is noted. Runtime complexity: O(len(keys)) amortized."""
        held = self.keys
        if not held.isdisjoint(keys) or len(set(keys)) != len(keys):
            return False
        held.update(keys)
        order = self.order
        order.extend(keys)
        if len(order) >= self.limit:
            self.trim()
        return True

    def trim(self) -> None:
        """Forget all but the last ``size`` keys."""
        order = self.order
        excess = len(order) - self.size
        if excess > 0:
            self.keys.difference_update(order[:excess])
            del order[:excess]

    def __len__(self) -> int:
        return len(self.keys)


class _LRU(OrderedDict[tuple[str, str], int]):
    def put(self, key: tuple[str, str], value: int) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > MAX_TRACKED:
            self.popitem(last=False)


class Recorder:
    """The events of one upstream response on their way into the history: held in arrival order and recorded in
    batches (one ``record_many`` each), into the response's stream. The one recorder of the relay and of keep
    mode's feed.

    A response whose stream is not known yet (a fresh request) is given one with its first batch: the one stream
    of the session that holds its first event with an id already (the same upstream stream read again: an
    upstream that starts every response over, or a feed several clients of one session read), or a new one. So
    several clients reading the same stream share one copy of it, and a later resume finds its ids in one stream.
    """

    __slots__ = ("ids", "raws", "recorded", "session", "store", "stream")

    def __init__(self, store: HistoryStore, session: str, stream: str | None) -> None:
        self.store = store
        self.session = session
        self.stream = stream
        self.ids: list[str | None] = []
        self.raws: list[bytes] = []
        self.recorded = 0
        """Events handed to the store so far (the store itself drops those it remembers already)."""

    def add(self, event_id: str | None, raw: bytes) -> None:
        self.raws.append(raw)
        self.ids.append(event_id)

    def drop(self) -> None:
        """Forget what is pending (after a failure: it is not recorded)."""
        self.ids, self.raws = [], []

    def flush(self) -> None:
        """Record what is pending. May raise what the store raises (the batch is then dropped)."""
        raws = self.raws
        if not raws:
            return
        ids = self.ids
        self.ids, self.raws = [], []
        stream = self.stream
        if stream is None:
            stream = self.stream = self._bind(ids, raws)
        self.store.record_many(self.session, stream, ids, raws)
        self.recorded += len(raws)

    def _bind(self, ids: list[str | None], raws: list[bytes]) -> str:
        store = self.store
        for event_id, raw in zip(ids, raws, strict=True):
            if event_id:
                stream = store.stream_of(self.session, event_id, raw)
                if stream is not None:
                    return stream
                break
        return store.new_stream(self.session)


@dataclass(slots=True)
class RelayStats:
    recorded: int = 0
    duplicates: int = 0
    oversize: int = 0


class Relay:
    """One upstream SSE response on its way to one client."""

    __slots__ = (
        "_charge",
        "_forgotten",
        "_hot",
        "_hot_bytes",
        "_max_event_bytes",
        "_parser",
        "_prefix",
        "_prefixed",
        "_rec",
        "_resume_seq",
        "_resumer",
        "_retry",
        "_started",
        "_store",
        "_synced",
        "_window",
        "closed",
        "failed",
        "on_failure",
        "passthrough",
        "session",
        "stats",
        "transcript",
    )

    def __init__(
        self,
        resumer: Resumer,
        session: str,
        stream: str | None,
        resume_seq: int | None,
        prefix: bytes,
        window: int,
        max_event_bytes: int,
        transcript_bytes: int = 0,
        transcript_budget: TranscriptBudget | None = None,
        charge: Charge | None = None,
    ) -> None:
        self._resumer = resumer
        # The prefix's bytes (an inline replay), counted against the replay budget until the proxy has sent them:
        # released by the first call after the one that handed the prefix on (see _feed).
        self._charge = charge if charge is not None and charge.held else None
        self._store = resumer.store
        self.session = session
        self._rec = Recorder(self._store, session, stream)
        self._resume_seq = resume_seq
        # What the session had forgotten when the client's position was taken (see _new_to_client).
        self._forgotten = self._store.forgotten(session) if resume_seq is not None else 0
        self._prefix = prefix
        self._prefixed = False  # the prefix went to the client (before the upstream's first bytes)
        self._window = Window(window) if window else None
        self._retry: int | None = None  # the upstream's last retry, until the stream is known
        self._parser = SSEParser(max_event_bytes)
        self._max_event_bytes = max_event_bytes
        self._hot_bytes = min(max_event_bytes, BIG_CHUNK)  # (so a batch holds at most BATCH * BIG_CHUNK bytes)
        self.stats = RelayStats()
        self.closed = False
        self.failed: Exception | None = None
        """The internal error that turned this relay into plain pass-through, if one did."""
        self.on_failure: Callable[[Relay], None] | None = None
        """Called once, when an internal error turns this relay into plain pass-through."""
        self.passthrough = ""
        """Why this relay stopped interpreting the stream (it passes bytes untouched), if it did."""
        self._started = False  # the first event has been seen
        # Events are relayed at once and recorded in batches by flush(): those pipe() takes whole, and those the
        # general path parses, in the order they came. It runs every BATCH events (or after a chunk larger than
        # BIG_CHUNK), before a decision looks the history up, at the end, and on the caller's timer. (Recording
        # one event at a time was most of the relay's cost, and a batch costs less per event the larger it is:
        # inside mitmdump, 1.6 us an event in batches of 250, 0.85 us in batches of 840.)
        self._synced = 0  # how many of those the window's order and the transcript have (see _sync)
        self._hot = False  # pipe() may take the batched path: started, parser idle, not failed or passed through
        self.transcript = Transcript(transcript_bytes, transcript_budget) if transcript_bytes else None
        """The most recent bytes sent to the client, for the flow view (None when disabled)."""

    def pipe(self, chunk: bytes) -> bytes | tuple[()]:
        """:meth:`feed`, or :meth:`close` when ``chunk`` is empty; nothing to send comes back as ``()``.

        Made to be a proxy's stream callable as it is (to which an empty bytes return would mean the end of
        the stream): the relay's hot path, one call per upstream chunk.
        """
        # The hot path: a stream between blocks (see _feed), and a chunk that is one whole event of the usual
        # shape. Unless the client has it already, it is relayed at once and recorded in a batch by flush().
        if self._hot and len(chunk) <= self._hot_bytes:
            try:
                # One call (in C when built: reading the id in Python was about half of the relay's time inside
                # mitmdump) for every shape of one whole plain event.
                event_id: str | Literal[False] | None = single_event_id(chunk)
                if event_id is not False:
                    if event_id:
                        window = self._window
                        if self._resume_seq is not None or window is None:
                            if not self._new_to_client(event_id, chunk):
                                return ()
                        else:
                            # Window.add, inline: a fresh stream's one check per event. Two calls fewer took
                            # Relay.feed from 3.5-4.2 to 2.3-3.0 us of CPU an event (the id-data shape, 50,000
                            # events, three paired runs on a quiet machine).
                            key = hash(chunk)
                            keys = window.keys
                            if key in keys:
                                self._count_duplicate()
                                return ()
                            keys.add(key)
                            order = window.order
                            order.append(key)
                            if len(order) >= window.limit:
                                window.trim()
                    rec = self._rec
                    pending = rec.raws
                    if not pending:
                        self._resumer.unflushed.add(self)
                    pending.append(chunk)
                    rec.ids.append(event_id)
                    if self._prefix:  # a note for the client came up (rare: see _new_to_client)
                        chunk = self._told(chunk)
                    if len(pending) >= BATCH:
                        self.flush()
                    return chunk  # (no prefix is left once started; flush() keeps it in the transcript)
            except Exception as e:  # not expected: keep the bytes flowing if it happens
                self._fail(e)
                self._sync()
                return self._emit(chunk)
        out = self._feed(chunk) if chunk else self.close()
        return out if out else ()

    def feed(self, chunk: bytes) -> bytes:
        """Take a chunk from upstream; return the bytes to send the client now (maybe ``b""``).

        Never raises. After an internal error (see :attr:`failed`) every byte not yet handed on is returned,
        and from then on chunks pass through as they are.
        """
        out = self.pipe(chunk) if chunk else self._feed(chunk)
        return out if out else b""

    def _feed(self, chunk: bytes) -> bytes:
        """:meth:`feed`, past the hot path."""
        self._sync()
        if self._charge is not None and self._prefixed:
            # The proxy asks for more only once the client has taken what it was handed (mitmproxy reads the
            # upstream on once its writers have drained): the prefix is out of the proxy's hands.
            self._charge.release()
            self._charge = None
        if self.failed is not None or self.passthrough:
            return self._emit(self._take_held() + chunk)
        if self._started:
            outs = []
            for piece in cut_at_blocks(chunk, self._parser.idle):
                if self.failed is not None:  # (an error in an earlier piece: the rest passes on untouched)
                    outs.append(self._take_held() + piece)
                    continue
                whole: bytes | None = None
                if self._parser.idle:
                    try:
                        whole = self._whole(piece)
                    except Exception as e:  # not expected: the parser holds nothing, so the piece is all there is
                        self._fail(e)
                        whole = piece
                outs.append(self._parsed(piece) if whole is None else whole)
            out = outs[0] if len(outs) == 1 else b"".join(outs)
        else:
            out = self._parsed(chunk)
        # The hot path is for streams past their first event, and only while the parser holds nothing: then a
        # chunk that is one whole event is exactly that.
        self._hot = (
            self._started
            and self.failed is None
            and not self.passthrough
            and self._parser.idle
            and self._charge is None  # (the next call releases it)
        )
        out = self._emit(out)
        pending = len(self._rec.raws)
        if pending >= BATCH or (pending and len(chunk) > BIG_CHUNK):
            self.flush()
        return out

    def _whole(self, chunk: bytes) -> bytes | None:
        """The bytes to send for ``chunk`` when it is whole events of the plain kinds that make one batch (see
        :func:`plain_batch`), none a duplicate by the window (and the client not resuming, which asks the
        history about each): all of it, and the events are taken to record, as :meth:`_keep` takes them one by
        one. Else None (nothing done): the parser reads it.

        (For the stream between blocks, as :meth:`pipe`'s hot path. The ``many`` shape, 16 events to a chunk:
        Relay.pipe from 9.6-11 to 4.0-5.6 us of CPU an event, 1.6 of them the history's record_many, in one
        process; inside mitmdump, from 0.32x to 0.52x of a plain passthrough's events/s, medians of 6 paired
        rounds of bench_relay.py, with the cuts of :func:`cut_at_blocks`.)
        """
        found = plain_batch(chunk, self._max_event_bytes)
        if found is None:
            return None
        raws, ids = found
        last = ids[-1]
        if last is not None:
            window = self._window
            if self._resume_seq is not None:
                return None
            # (A key in the window or twice in the chunk: the parser reads it, and _keep counts the duplicates.)
            if window is not None and not window.add_all(list(map(hash, raws))):
                return None
            self._parser.last_event_id = last
        rec = self._rec
        if not rec.raws:
            self._resumer.unflushed.add(self)
        rec.raws.extend(raws)
        rec.ids.extend(ids)
        return chunk

    def _parsed(self, chunk: bytes) -> bytes:
        """The bytes to send for ``chunk``, read by the parser, block by block."""
        try:
            blocks = self._parser.feed(chunk)
        except Exception as e:  # not expected: the parser then still holds every byte it did not hand on
            self._fail(e)
            out = self._take_held()  # (what it held before, then chunk)
        else:
            # (pipe() took every chunk that is one whole event while the parser held nothing)
            out = self._relay(blocks) if self._started else self._first_events(blocks)
        return out

    def _fail(self, error: Exception) -> None:
        """Turn this relay into plain pass-through after an internal error (the first one is kept)."""
        self._hot = False
        if self.failed is not None:
            return
        self.failed = error
        if self.on_failure is not None:
            with contextlib.suppress(Exception):  # a caller's logging must not break the relay
                self.on_failure(self)

    def _sync(self) -> None:
        """Catch up with the events :meth:`pipe` relayed since the last call (or :meth:`_emit`): the parser
        learns their last id, the dedupe window their order, the transcript their bytes."""
        start = self._synced
        pending = self._rec.raws
        if len(pending) == start:
            return
        ids = self._rec.ids[start:] if start else self._rec.ids
        for event_id in reversed(ids):  # what the parser would say, had it seen them (pipe() skipped it)
            if event_id is not None:
                self._parser.last_event_id = event_id
                break
        if self.transcript is not None:
            self.transcript.extend(pending[start:] if start else pending)
        self._synced = len(pending)

    def flush(self) -> None:
        """Record the events relayed but not recorded yet (and bring the window and the transcript up to date).
        Never raises."""
        rec = self._rec
        if not rec.raws:
            return
        self._sync()
        self._synced = 0
        self._resumer.unflushed.discard(self)
        if self.failed is not None:
            rec.drop()
            return
        try:
            unbound = rec.stream is None
            n = len(rec.raws)
            rec.flush()
            self.stats.recorded += n
            if unbound and self._retry is not None:
                self._resumer.upstream_retry.put((self.session, rec.stream), self._retry)  # type: ignore[arg-type]
        except Exception as e:  # the bytes went to the client already: only the record is lost
            self._fail(e)

    @property
    def stream(self) -> str | None:
        """The history stream this response continues; ``None`` until its first events are recorded, when it
        joins the stream that holds the same events already (if one does) or opens a new one (see
        :class:`Recorder`)."""
        return self._rec.stream

    def close(self) -> bytes:
        """The upstream ended cleanly: return what is left to send (an unfinished final block, as it came)."""
        self.closed = True
        self._sync()
        if self._charge is not None:  # what is left goes out with the end of the response
            self._charge.release()
            self._charge = None
        if self.failed is not None or self.passthrough:
            out = self._take_held()  # (after a failure in a flush: the start of a block the parser held)
        else:
            try:
                blocks = self._parser.close()
            except Exception as e:  # not expected: as in _feed, the parser still holds what it did not hand on
                self._fail(e)
                out = self._take_held()
            else:
                out = self._relay(blocks)
        out = self._emit(out)
        self.flush()
        return out

    def _take_held(self) -> bytes:
        """The bytes the parser holds as an unfinished block, taken from it (it starts afresh): handed on once,
        when the relay stops interpreting the stream."""
        held = self._parser.held()
        if held:
            self._parser = SSEParser(self._max_event_bytes)
        return held

    def _emit(self, out: bytes) -> bytes:
        """Put any pending prefix in front of ``out`` and keep it in the transcript (after :meth:`_sync`: the
        events the general path added to those pending since are in ``out``, and in the window's order)."""
        if self._prefix:
            out, self._prefix = self._prefix + out, b""
            self._prefixed = True
        if self.transcript is not None:
            self.transcript.add(out)
        self._synced = len(self._rec.raws)
        return out

    def _first_events(self, blocks: list[Block]) -> bytes:
        """Look at the stream's first event: a legacy MCP HTTP+SSE stream (2024-11-05) is passed untouched.

        A byte order mark starts the stream, or is dropped: with a prefix of the relay's own (a comment, a
        restored ``retry``, a replay) it goes in front of the prefix, and when the prefix went out before it
        arrived it goes nowhere. Anywhere else a client would read it as part of the next field's name.
        """
        if blocks and blocks[0].kind is _BOM and (self._prefix or self._prefixed):
            if not self._prefixed:
                self._prefix = blocks[0].raw + self._prefix
            blocks = blocks[1:]
        for block in blocks:
            if block.kind is _EVENT:
                self._started = True
                if block.type == LEGACY_ENDPOINT_EVENT:
                    self.passthrough = "legacy MCP HTTP+SSE transport: nothing to resume"
                    return b"".join(b.raw for b in blocks) + self._take_held()
                break
        return self._relay(blocks)

    def _relay(self, blocks: list[Block]) -> bytes:
        """Record each block and keep those this client has not had; return the kept bytes."""
        if not blocks:
            return b""
        kept: list[bytes] = []
        done = 0  # blocks fully handled: after an error, the rest are handed on untouched
        try:
            keep = self._keep
            for block in blocks:
                if keep(block.raw, block.kind, block.id, block.retry):
                    kept.append(block.raw)
                done += 1
        except Exception as e:  # a store error, say: this block and the rest go on untouched
            self._fail(e)
            kept.extend(b.raw for b in blocks[done:])
            kept.append(self._take_held())  # and so does the start of the next block, or it would be lost
        if len(kept) == 1:
            return kept[0]
        return b"".join(kept)

    def _new_to_client(self, event_id: str, raw: bytes) -> bool:
        """Whether the client lacks this event (with an id), noting it delivered if so. It has it when its stream
        holds it at or before the position it resumed from, or when this connection delivered it lately (either
        is counted as a duplicate).

        Should the session forget events while the client reads (other streams of it push them out), one the
        upstream sends again can no longer be told from a new one: before the next event it is handed, the client
        is told, as a decision made after the forgetting would tell it (see _warned). What the stream remembers at
        or before the client's position is still dropped: that position was taken before anything was forgotten,
        and an event forgotten and sent again is recorded anew, after it.
        """
        resume_seq = self._resume_seq
        if resume_seq is not None:
            position = self._store.position(self.session, self.stream, event_id, raw)  # type: ignore[arg-type]
            if position is not None and position <= resume_seq:
                self._count_duplicate()
                return False
        window = self._window
        if window is not None and not window.add(hash(raw)):
            self._count_duplicate()
            return False
        if resume_seq is not None:
            forgotten = self._store.forgotten(self.session)
            if forgotten != self._forgotten:
                self._forgotten = forgotten
                self._prefix += FORGOTTEN_NOTE  # (sent in front of this event)
        return True

    def _told(self, chunk: bytes) -> bytes:
        """The chunk pipe() has just taken, with the note that came up for the client in front of it (and so in
        the transcript too)."""
        note, self._prefix = self._prefix, b""
        pending = self._rec.raws
        pending.pop()
        self._sync()  # what pipe() relayed before it, into the transcript
        pending.append(chunk)
        event_id = self._rec.ids[-1]
        if event_id is not None:
            self._parser.last_event_id = event_id
        if self.transcript is not None:
            self.transcript.add(note + chunk)
        self._synced = len(pending)
        return note + chunk

    def _count_duplicate(self) -> None:
        self.stats.duplicates += 1
        self._resumer.stats.deduplicated += 1

    def _keep(self, raw: bytes, kind: BlockKind, event_id: str | None, retry: int | None) -> bool:
        """Take one block to record (see flush); say whether this client should get it (False: it already has it)."""
        stats = self.stats
        if event_id and not self._new_to_client(event_id, raw):
            return False
        if kind is _EVENT or (kind is _EMPTY and event_id is not None):
            # An event, or an id-only block (a priming event, a reset): both are positions in the stream,
            # recorded by flush() with those pipe() relayed, in order.
            rec = self._rec
            if not rec.raws:
                self._resumer.unflushed.add(self)
            rec.add(event_id, raw)
        elif kind is _OVERSIZE:
            stats.oversize += 1
        if retry is not None:
            if self.stream is None:
                self._retry = retry
            else:
                self._resumer.upstream_retry.put((self.session, self.stream), retry)
        return True


@dataclass(slots=True)
class ResumeStats:
    hits: int = 0
    up_to_date: int = 0
    behind: int = 0
    misses: int = 0
    replayed: int = 0
    deduplicated: int = 0


class Resumer:
    """Makes resume decisions against a history store and opens relays. One per proxy, for the relay and the
    keeper alike; :meth:`reconfigure` changes its settings in place, so what it remembers (the ``retry`` to
    restore after a replay) outlives a change of options."""

    def __init__(
        self,
        store: HistoryStore,
        *,
        replay: bool = True,
        stale_policy: Literal["forward", "restart"] = "forward",
        dedupe_window: int = 100,
        max_event_bytes: int = 1024 * 1024,
        replay_retry: int = 50,
        default_retry: int = 3000,
        transcript_bytes: int = 0,
        transcript_budget: TranscriptBudget | None = None,
        stats: ResumeStats | None = None,
        unflushed: set[Relay] | None = None,
        budget: ReplayBudget | None = None,
    ) -> None:
        self.store = store
        self.budget = budget or ReplayBudget()
        """Bounds the bytes of replays (each, and all in flight); may be shared by resumers."""
        self.transcript_bytes = transcript_bytes
        self.transcript_budget = transcript_budget
        """The bound on every relay's transcript together (None: each is bound by ``transcript_bytes`` only)."""
        self.replay = replay
        self.stale_policy = stale_policy
        self.dedupe_window = dedupe_window
        self.max_event_bytes = max_event_bytes
        self.replay_retry = replay_retry
        self.default_retry = default_retry
        self.unflushed: set[Relay] = set() if unflushed is None else unflushed
        """Relays holding events not recorded yet (see :meth:`Relay.flush`); may be shared by resumers."""
        self.upstream_retry = _LRU()  # (session, stream) -> the last retry the upstream sent on it
        self.pending_restore = _LRU()  # streams whose clients got a short retry with a replay
        self.stats = stats or ResumeStats()

    def reconfigure(
        self,
        *,
        store: HistoryStore | None = None,
        replay: bool | None = None,
        stale_policy: Literal["forward", "restart"] | None = None,
        dedupe_window: int | None = None,
        max_event_bytes: int | None = None,
        replay_retry: int | None = None,
        default_retry: int | None = None,
        transcript_bytes: int | None = None,
    ) -> None:
        """Change settings in place (relays already open keep theirs). A new store starts a new history: what
        was remembered of the old one's streams is dropped with it."""
        if store is not None and store is not self.store:
            self.flush()
            self.store = store
            self.upstream_retry.clear()
            self.pending_restore.clear()
        if replay is not None:
            self.replay = replay
        if stale_policy is not None:
            self.stale_policy = stale_policy
        if dedupe_window is not None:
            self.dedupe_window = dedupe_window
        if max_event_bytes is not None:
            self.max_event_bytes = max_event_bytes
        if replay_retry is not None:
            self.replay_retry = replay_retry
        if default_retry is not None:
            self.default_retry = default_retry
        if transcript_bytes is not None:
            self.transcript_bytes = transcript_bytes

    async def decide(
        self, session: str, last_event_id: str | None, inline: bool = False, kept: bool = False
    ) -> Decision:
        """Decide how to serve a request of ``session`` that carries ``last_event_id`` (or none).

        ``inline`` asks for a hit to be served in front of the live upstream stream rather than as a response
        of its own (for clients that do not reconnect by themselves). ``kept``: keep mode, where the client is
        served from history and then attached to the stream the proxy reads (see :mod:`sse_resume_keep`): a
        hit's :attr:`Decision.replay` is then every event held after the id, and no body is made.
        """
        if not last_event_id:
            return Decision("fresh", session)
        self.flush()  # every event relayed so far is in the history before it is looked up
        found = await self.store.find(session, last_event_id)
        if found is None:
            return self._miss(session, last_event_id, _UNKNOWN)
        if found.ambiguous:
            return self._miss(session, last_event_id, _AMBIGUOUS % found.ambiguous)
        after = found.after
        if not kept:
            # Replay up to the newest event that has an id: the client's Last-Event-ID after the replay is then a
            # position we hold, and events without id after it are not sent twice.
            last = max((i for i, e in enumerate(after) if e.id), default=-1)
            after = after[: last + 1]
        if after and self.replay and found.complete:
            if kept:
                return _warned(self._kept_hit(session, found, after), found)
            return _warned(self._hit(session, found, after, inline), found)
        key = (session, found.stream)
        prefix = b""
        if key in self.pending_restore and not kept:
            del self.pending_restore[key]
            retry = self.upstream_retry.get(key, self.default_retry)
            prefix = b"retry: %d\n\n" % retry
        if after or not found.complete:
            # Newer events went by but cannot be replayed (ids only, or evicted from the history): the upstream
            # must send them again, resuming from the client's own id. What it sends that the client has (an
            # upstream that starts over) is recognised by the relay and dropped.
            self.stats.behind += 1
            why = "not kept (ids only)" if self.replay is False else "no longer held"
            note = f"newer events seen but {why}: resuming upstream from the client's Last-Event-ID"
            prefix = b": sse-resume: %s\n\n%s" % (note.encode(), prefix)  # (told, as on a miss)
            decision = Decision("behind", session, found.stream, last_event_id, found.seq, prefix=prefix, note=note)
            return _warned(decision, found)
        self.stats.up_to_date += 1
        newest = found.newest_id or last_event_id
        note = "up to date: " + ("attached to the kept stream" if kept else "resuming upstream")
        decision = Decision("up-to-date", session, found.stream, newest, found.seq, prefix=prefix, note=note)
        return _warned(decision, found)

    def _kept_hit(self, session: str, found: Found, after: tuple[StoredEvent, ...]) -> Decision:
        """A hit in keep mode: the keeper sends the replay in parts (bounded by the budget as it goes), then the
        live events of the kept stream, on one response."""
        n = len(after)
        self.stats.hits += 1
        self.stats.replayed += n
        note = f"served {n} event{'s' if n != 1 else ''} from history, then the kept stream"
        newest = next((e.id for e in reversed(after) if e.id), None) or found.newest_id
        return Decision("hit", session, found.stream, newest, found.seq, after, note=note)

    def _hit(self, session: str, found: Found, after: tuple[StoredEvent, ...], inline: bool) -> Decision:
        budget = self.budget
        n = len(after)
        room = budget.room()
        k = fitting(after, room, _NOTE_ROOM)
        if k < n and k < fitting(after, budget.per_replay, _NOTE_ROOM):
            budget.shortened += 1
        part = after[:k] if k < n else after
        rest = n - k
        self.stats.hits += 1
        self.stats.replayed += k
        note = f"served {k} event{'s' if k != 1 else ''} from history"
        if rest and inline:
            # An inline client does not reconnect: the rest is asked of the upstream, after the last event served
            # (as when payloads are not kept). An upstream that does not resume from Last-Event-ID skips them.
            note += f" (a replay is bounded); the {rest} after {'them' if k != 1 else 'it'} asked of the upstream"
        elif rest:
            note += f" (a replay is bounded); {rest} more in the next response"
        if inline:
            note += ", then the live stream"
        replay = [b": sse-resume: %s\n\n" % note.encode(), *(e.raw or b"" for e in part)]
        if inline:
            newest = part[-1]
            # The client will have everything up to the newest replayed event: its position from now on.
            prefix = b"".join(replay)
            return Decision(
                "hit",
                session,
                found.stream,
                newest.id,
                newest.seq,
                part,
                prefix=prefix,
                note=note,
                charge=budget.charge(len(prefix)),
                held_back=rest,
            )
        self.pending_restore.put((session, found.stream), 1)
        body = b"".join([*replay, b"retry: %d\n\n" % self.replay_retry])
        return Decision(
            "hit",
            session,
            found.stream,
            None,
            found.seq,
            part,
            body,
            note=note,
            charge=budget.charge(len(body)),
            held_back=rest,
        )

    def _miss(self, session: str, last_event_id: str, why: str) -> Decision:
        self.stats.misses += 1
        # An id the proxy made (keep mode's sse_assign_ids) means nothing to the upstream: it is never sent.
        if self.stale_policy == "restart" or is_proxy_id(last_event_id):
            note = f"Last-Event-ID {why}: restarted the stream upstream; continuity not guaranteed"
            forward = None
        else:
            note = f"Last-Event-ID {why}: forwarded upstream; continuity not guaranteed"
            forward = last_event_id
        return Decision("miss", session, None, forward, None, prefix=b": sse-resume: %s\n\n" % note.encode(), note=note)

    def flush(self) -> None:
        """Record what every relay holds back (see :meth:`Relay.flush`); the caller's timer calls it too.

        Relays that know their stream go first: a fresh one then finds the events it shares with them (the
        same upstream stream read by several clients of a session) and joins their stream."""
        relays = sorted(self.unflushed, key=lambda relay: relay.stream is None)
        for relay in relays:
            relay.flush()

    def open(self, decision: Decision, release_early: bool = False) -> Relay:
        """Open the relay for the upstream response to a request decided as ``decision``.

        ``release_early``: the relay releases the decision's charge (an inline replay) as soon as the proxy has
        sent it (see :meth:`Relay._feed`; true of HTTP/1 clients); otherwise its caller does, at the flow's end.
        """
        return Relay(
            self,
            decision.session,
            decision.stream,
            decision.resume_seq,
            decision.prefix,
            self.dedupe_window,
            self.max_event_bytes,
            self.transcript_bytes,
            self.transcript_budget,
            decision.charge if release_early else None,
        )

"""Keep mode, sans-I/O: what a kept upstream stream does with the bytes it reads, and when it tries again.

In keep mode the proxy reads an SSE upstream itself (the I/O lives in ``sse_resume_keep``). Each connection to
the upstream feeds a :class:`KeptFeed`, which parses the stream, gives events without an id one of the proxy's
own when asked, records each event into the history once (with the relay's :class:`Recorder`, a batch per
upstream read), and says which blocks go to the attached clients. The same feed lives across the upstream
reconnects of its stream.

A feed knows how far its clients are in its history stream (:attr:`KeptFeed.position`): an event the history
remembers at or before that position is one they have (an upstream that ignores ``Last-Event-ID`` and starts
over sends it again) and is dropped; one it remembers after it was recorded by another reader of the same stream
(several clients of one session, each on a request of its own, share one copy, as in the relay), or is one a
resume that is *behind* did not get: it goes to the clients, and is not recorded again. Events are recognised by
their id and bytes. :class:`Backoff` says how long to wait before the next try.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, cast

from sse_resume_core._parser import Block, BlockKind, SSEParser, cut_at_blocks, plain_batch
from sse_resume_core._resume import BATCH, FORGOTTEN_NOTE, PROXY_ID_PREFIX, Recorder, Window, is_proxy_id
from sse_resume_core._store import HistoryStore

_OVERSIZE: Final = BlockKind.OVERSIZE

__all__ = ["PROXY_ID_PREFIX", "Backoff", "KeepStats", "KeptFeed", "is_proxy_id"]

_ids = itertools.count(1)  # one counter for the process: ids stay unique however often a stream is re-kept


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: ``base * 2**(try-1)`` seconds, at most ``cap``, for ``tries`` tries.

    When the upstream sent a ``retry`` (milliseconds) it replaces ``base``, as it would for a browser.
    """

    base: float = 1.0
    cap: float = 30.0
    tries: int = 10
    jitter: float = 0.1

    def delay(
        self, attempt: int, retry_ms: int | None = None, rand: Callable[[], float] = random.random
    ) -> float | None:
        """Seconds to wait before try number ``attempt`` (1 is the first retry); ``None`` when the tries are spent."""
        if attempt < 1 or attempt > self.tries:
            return None
        base = retry_ms / 1000 if retry_ms is not None else self.base
        delay: float = min(self.cap, base * 2.0 ** (attempt - 1))
        return max(0.0, delay * (1 + self.jitter * (2 * rand() - 1)))


@dataclass(slots=True)
class KeepStats:
    """What the keeper reads to decide on the next try (whether a connection was made, whether it progressed)."""

    events: int = 0
    """Events handed to the clients (each new to them), whether recorded by this feed or held already."""
    connections: int = 0
    """Upstream connections read, the first included."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """A block for the attached clients. ``recorded`` is True when the history holds it (a returning client
    gets it from there); comments and oversize pieces are only delivered live.

    ``oversize``: a piece of an event larger than ``max_event_bytes``; ``more``: the event goes on after this
    piece (a client that starts reading here would read the rest as an event of its own). The piece that ends
    an oversize event can be empty: it only says the event is over.

    ``seq``: the event's sequence number in the history stream when it was held there before this feed got it
    (another reader recorded it), so that a client whose replay went past it can skip it; -1 otherwise (an event
    new to the history comes after anything a client was replayed).

    ``events``: how many events ``raw`` holds, when ``recorded``: whole events new to the history that came in one
    upstream read are handed on as one delivery (see :meth:`KeptFeed.feed`).
    """

    raw: bytes
    recorded: bool
    oversize: bool = False
    more: bool = False
    seq: int = -1
    events: int = 1


class KeptFeed:
    """The events of one kept stream, across every upstream connection that feeds it."""

    __slots__ = (
        "_forgotten",
        "_head",
        "_newest",
        "_open",
        "_parser",
        "_rec",
        "_window",
        "assign_ids",
        "by_position",
        "max_event_bytes",
        "name",
        "position",
        "retry",
        "session",
        "stats",
        "store",
        "upstream_id",
    )

    def __init__(
        self,
        store: HistoryStore,
        session: str,
        stream: str | None = None,
        *,
        position: int = -1,
        head: str | None = None,
        by_position: bool = True,
        assign_ids: bool = False,
        max_event_bytes: int = 1024 * 1024,
        upstream_id: str | None = None,
    ) -> None:
        self.store = store
        self.session = session
        self.name = f"k{next(_ids)}"
        """This kept stream's own name (unique in the process; several may feed one history stream)."""
        self.position = position
        """The clients have every event of the history stream up to this sequence number (-1: none yet)."""
        self._head = head  # the id of the event at position (None: none yet)
        self.by_position = by_position
        """False in a session that has forgotten events, where positions do not follow the upstream's order (see
        the Resumer's ``_warned``): nothing is dropped by position, only what the batch repeats. When the session
        forgets events while this feed reads, the clients are told before the next event (as a relay tells its
        client)."""
        self._forgotten = store.forgotten(session)  # what the session had forgotten when positions were taken
        self._newest: tuple[str, bytes] | None = None  # the newest event with an id waiting to be recorded
        self.assign_ids = assign_ids
        self.max_event_bytes = max_event_bytes
        self.upstream_id = upstream_id
        """The newest id the upstream itself sent: the ``Last-Event-ID`` of the next upstream request."""
        self.retry: int | None = None
        """The upstream's last ``retry`` (ms), if it sent one."""
        self.stats = KeepStats()
        self._parser = SSEParser(max_event_bytes)
        # ``stream`` None (a fresh request): the Recorder binds the feed with its first batch, to the stream that
        # holds its first event already (the same upstream stream another client of the session reads) or a new one.
        self._rec = Recorder(store, session, stream)
        # The events of the batch being read (the history knows those of earlier batches): the one dedupe window.
        self._window = Window(BATCH)
        self._open = False  # the last piece handed on left an oversize event unfinished

    @property
    def stream(self) -> str | None:
        """The history stream the feed records into (None until its first batch, for a fresh request)."""
        return self._rec.stream

    @property
    def open_oversize(self) -> bool:
        """An oversize event is under way: some of it was handed on, the rest is still to come."""
        return self._open

    def connected(self) -> None:
        """A new upstream connection starts: its bytes start a stream of their own."""
        self.stats.connections += 1
        self._parser = SSEParser(self.max_event_bytes)
        self._open = False

    def feed(self, chunk: bytes) -> list[Delivery]:
        """Take bytes from the upstream; return the blocks for the clients, in order.

        Whole events of the plain kinds, none held by the history nor repeated, are taken in one piece without
        the parser (:meth:`_whole`), as the relay takes them; the rest is parsed. (Measured with
        benchmarks/bench_keep.py, paired rounds against the feed that parsed every block: 2.3x the events/s with
        16 events to an upstream chunk, and 1.4x with one, as a read of the keeper's often holds several.)
        """
        if not chunk:
            return []
        out: list[Delivery]
        if self._open:  # (an oversize event under way: the parser hands its bytes on)
            out = self._parsed(chunk)
            self._record()
            return out
        out = []
        for piece in cut_at_blocks(chunk, self._parser.idle):
            whole = self._whole(piece) if self._parser.idle and not self._open else None
            out += self._parsed(piece) if whole is None else whole
        self._record()  # before the blocks go out: a client reconnecting finds them in the history
        return out

    def _parsed(self, chunk: bytes) -> list[Delivery]:
        parser = self._parser
        blocks = parser.feed(chunk)
        # Nothing held and yet not idle: the parser is inside an oversize block, handing its bytes on as they
        # come (only the last block of a feed can be such an unfinished piece).
        still_open = not parser.idle and parser.pending == 0 and bool(blocks) and blocks[-1].kind is _OVERSIZE
        return self._take(blocks, still_open)

    def _whole(self, chunk: bytes) -> list[Delivery] | None:
        """The delivery of ``chunk`` when it is whole events of the plain kinds that make one batch (see
        :func:`plain_batch`), which :meth:`_take` would record and deliver each, unchanged, in order (and the
        events are taken to record). Else None, with nothing done: the parser reads it. For a stream between
        blocks."""
        found = plain_batch(chunk, self.max_event_bytes)
        if found is None:
            return None
        raws, ids = found
        last = ids[-1]
        store, session, rec = self.store, self.session, self._rec
        if last is None:
            if self.assign_ids:
                return None  # (each is given an id of the proxy's)
        else:
            if is_proxy_id(last):
                return None  # (not the upstream's: the next request's Last-Event-ID is an earlier one)
            stream = rec.stream
            if self.by_position:
                if store.forgotten(session) != self._forgotten:
                    return None  # (the clients are told, before the next event)
                if stream is not None and any(
                    seq is not None
                    for seq in map(
                        store.position, itertools.repeat(session), itertools.repeat(stream), cast(list[str], ids), raws
                    )
                ):
                    return None  # (held already: by position, dropped or delivered as held)
            if not self._window.add_all(list(map(hash, raws))):
                return None  # (a repeat: the parser's path drops it)
            self.upstream_id = last
            self._newest = (last, raws[-1])
        rec.raws += raws
        rec.ids += ids
        self.stats.events += len(raws)
        if len(rec.raws) >= BATCH:
            self._record()
        return [Delivery(chunk, True, events=len(raws))]

    def _take(self, blocks: list[Block], still_open: bool = False) -> list[Delivery]:
        out: list[Delivery] = []
        store, session, rec = self.store, self.session, self._rec
        if self._open and not (blocks and blocks[0].kind is _OVERSIZE):
            out.append(Delivery(b"", False, True))  # the event ended exactly where the last chunk did
            self._open = False
        last = len(blocks) - 1
        for n, block in enumerate(blocks):
            kind = block.kind
            raw = block.raw
            if block.retry is not None:
                self.retry = block.retry
            if kind is _OVERSIZE:
                self._open = still_open and n == last
                out.append(Delivery(raw, False, True, self._open))
                continue
            self._open = False
            if kind is BlockKind.BOM:
                # Clients get the proxy's own bytes (replays, comments) and later upstream connections in the
                # same response: a BOM there would be part of the next field's name. Their streams have none.
                continue
            if kind is BlockKind.UNFINISHED:  # (from ended(): its retry counted, the rest is never delivered)
                continue
            event_id = block.id
            if kind is BlockKind.EMPTY and event_id is None:
                out.append(Delivery(raw, False))  # comments, keep-alives, a bare retry
                continue
            if event_id:
                if not is_proxy_id(event_id):
                    self.upstream_id = event_id
                stream = rec.stream
                seq = None if stream is None or not self.by_position else store.position(session, stream, event_id, raw)
                if seq is not None and seq <= self.position:
                    continue  # the clients have it: the upstream sent it again
                if seq is None and not self._window.add(hash(raw)):
                    continue  # (the batch not recorded yet has it, or the events just before)
                if self.by_position and (forgotten := store.forgotten(session)) != self._forgotten:
                    # Forgotten meanwhile (other streams of the session pushed events out): what the upstream
                    # sends again may be among them. The clients are told before it, as on a resume. (Positions
                    # still hold: an event forgotten and sent again is recorded anew, after them.)
                    self._forgotten = forgotten
                    out.append(Delivery(FORGOTTEN_NOTE, False))
                if seq is not None:
                    # Held already, recorded by another reader of the stream (or past a behind resume's id):
                    # new to these clients, not to the history.
                    self.position, self._head = seq, event_id
                    self.stats.events += 1
                    out.append(Delivery(raw, True, seq=seq))
                    continue
                self._newest = (event_id, raw)
            elif event_id is None and self.assign_ids:
                event_id = f"{PROXY_ID_PREFIX}{self.name}.{next(_ids)}"
                raw = b"id: %s\n%s" % (event_id.encode(), raw)
                self._newest = (event_id, raw)
            elif event_id == "":
                self.upstream_id = None  # the upstream reset its ids: resume without one
            rec.add(event_id, raw)
            self.stats.events += 1
            if len(rec.raws) >= BATCH:
                self._record()
            out.append(Delivery(raw, True))
        return out  # (recorded by the caller before the blocks go out)

    def _record(self) -> None:
        """Record what is pending. The clients' position moves to the newest event recorded if the feed was at its
        stream's head: had another reader recorded events after it, the clients would lack those, and a
        position past them would drop them when they come (they are then recognised by position no more than
        the events this feed recorded: an upstream that sends those again, they get again)."""
        rec = self._rec
        newest, self._newest = self._newest, None
        if newest is None or not self.by_position:
            rec.flush()
            return
        stream = rec.stream
        at_head = stream is None or self.store.newest_id(self.session, stream) == (self._head or "")
        rec.flush()
        if at_head and rec.stream is not None:
            seq = self.store.position(self.session, rec.stream, *newest)  # (one lookup a batch)
            if seq is not None and seq > self.position:
                self.position, self._head = seq, newest[0]

    def ended(self) -> list[Delivery]:
        """The upstream connection ended (cleanly or not): return the blocks its last bytes complete (a final
        CR ends a line then). An unfinished block is dropped, never delivered: a client would discard it too,
        and a resumable upstream sends it again whole; its ``retry`` lines still count, as for a client. An
        oversize event under way is broken off, not ended (the keeper tells its clients).
        """
        parser, self._parser = self._parser, SSEParser(self.max_event_bytes)
        self._open = False
        out = self._take(parser.close())
        self._record()
        return out

"""Incremental, sans-I/O parser for ``text/event-stream`` bodies.

Bytes go in with :meth:`SSEParser.feed`, end of input is explicit with :meth:`SSEParser.close`, and what comes
out is a list of :class:`Block` values. The concatenation of ``block.raw`` over everything returned equals the
input byte for byte, so a caller can forward, drop or replay exactly what the upstream sent.

The rules are those of the WHATWG HTML standard, "Interpreting an event stream":
https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation

Bounds: the parser never holds more than ``max_size`` bytes of an unfinished block (plus at most three bytes of
context). A block that grows past ``max_size`` is handed on at once as :attr:`BlockKind.OVERSIZE` pieces, and is
not interpreted: its fields do not move :attr:`SSEParser.last_event_id`.

No input makes the parser raise: values are decoded with replacement characters, and a ``retry`` of any length
of digits is read without converting more than a few of them (a larger one counts as :data:`MAX_RETRY`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Final, Literal

__all__ = [
    "COMPILED",
    "DEFAULT_MAX_SIZE",
    "MAX_RETRY",
    "Block",
    "BlockKind",
    "SSEParser",
    "cut_at_blocks",
    "parse",
    "plain_batch",
    "single_event_id",
    "single_event_id_py",
    "whole_events",
    "whole_events_py",
]

DEFAULT_MAX_SIZE: Final = 1024 * 1024
"""Default bound, in bytes, of one block (an event with its lines and terminating blank line)."""

MAX_RETRY: Final = 2**31 - 1
"""The largest reconnection time, in ms, a ``retry`` field sets (about 24.8 days, the longest delay a browser's
timer honours): a valid ``retry`` with a larger value, however many digits it has, counts as this."""
_RETRY_DIGITS: Final = len(str(MAX_RETRY))

_BOM: Final = b"\xef\xbb\xbf"
# One line end: CRLF, a lone CR, or LF. A CR at the very end of the input is ambiguous (an LF may follow in the
# next chunk), which the scanning code below handles by holding it back.
_EOL: Final = rb"(?:\r\n|\r(?!\n)|\n)"
# A line end followed by a second one: the second ends an empty line, which dispatches the block.
_TERMINATOR: Final = re.compile(_EOL + _EOL)
_SPLIT_LINES: Final = re.compile(_EOL).split
# The shape almost every server sends, with LF line ends: an optional "id", an optional "event", one "data"
# line. Such a block is read with one C-level match; anything else takes the general line-by-line path.
# (Not a second test of "one whole event and its id", which is single_event_id's: this one decodes the type and
# data of a block the parser has already cut out, for a narrower shape, and anything it misses is still parsed.)
_CANONICAL: Final = re.compile(rb"(?:id: ?([^\n\x00]*)\n)?(?:event: ?([^\n]*)\n)?data: ?([^\n]*)").fullmatch


class BlockKind(IntEnum):
    """What a :class:`Block` is."""

    EVENT = 1
    """A complete block that dispatched an event (it had at least one ``data`` line)."""
    EMPTY = 2
    """A complete block that dispatched nothing: comments, id-only, retry-only, unknown fields, blank lines."""
    OVERSIZE = 3
    """A piece of a block larger than the parser's bound: passed on, never interpreted nor buffered."""
    UNFINISHED = 4
    """Bytes left at end of input without a terminating blank line: discarded by the spec, still handed on. Its
    complete ``retry`` lines still count (:attr:`Block.retry`): the spec applies a field as its line is read."""
    BOM = 5
    """The byte order mark at the very start of the stream (EF BB BF), on its own: stripped by the spec, still
    handed on. A consumer that puts bytes of its own in front of the stream keeps it first or drops it (after
    other bytes it would be part of the next field's name), and never stores it with the first block."""


@dataclass(frozen=True)
class Block:
    """One piece of an event stream, with its exact bytes and what they mean.

    ``id`` is the value of this block's ``id`` field (``None`` when it had none, or only ids containing NUL;
    ``""`` resets the last event id). ``last_event_id`` is the last event id in force after the block, which
    is what a client would send as ``Last-Event-ID``. ``data`` is ``None`` unless an event was dispatched;
    ``type`` is the event type ("message" by default) for events and ``""`` otherwise. ``retry`` is the valid
    ``retry`` value of this block, in milliseconds, if any (at most :data:`MAX_RETRY`); for an ``UNFINISHED``
    block, that of its complete lines.
    """

    raw: bytes
    kind: BlockKind
    id: str | None = None
    type: str = ""
    data: str | None = None
    retry: int | None = None
    last_event_id: str = ""


# Frozen dataclasses set each field with object.__setattr__ in __init__, which costs about a microsecond per
# block here. The parser builds them by installing a ready __dict__ instead: same class, same semantics.
_new: Final = object.__new__
_setattr: Final = object.__setattr__
_EVENT: Final = BlockKind.EVENT
_EMPTY: Final = BlockKind.EMPTY
_OVERSIZE: Final = BlockKind.OVERSIZE
_UNFINISHED: Final = BlockKind.UNFINISHED
_BOM_KIND: Final = BlockKind.BOM


def _retry(digits: bytes) -> int:
    """The reconnection time a valid ``retry`` value (ASCII digits only) sets, in ms: at most :data:`MAX_RETRY`.

    Never converts more than a few digits, so no length of value raises (Python's ``int()`` refuses strings of
    more than 4,300 digits). Runtime complexity: O(len(digits)).
    """
    if len(digits) > _RETRY_DIGITS:
        digits = digits.lstrip(b"0")  # (leading zeros count for nothing in base ten)
        if len(digits) > _RETRY_DIGITS:
            return MAX_RETRY
    return min(int(digits or b"0"), MAX_RETRY)


def _retry_of_lines(data: bytes) -> int | None:
    """The last valid ``retry`` among the complete lines of ``data`` (its last line, without a line end, is not
    one yet), or None. For the unfinished block at the end of a stream. Runtime complexity: O(len(data))."""
    retry: int | None = None
    for line in _SPLIT_LINES(data)[:-1]:
        if line.startswith(b"retry"):
            name, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if name == b"retry" and value.isdigit():
                retry = _retry(value)
    return retry


def _make(
    raw: bytes,
    kind: BlockKind,
    id: str | None,
    type: str,
    data: str | None,
    retry: int | None,
    last_event_id: str,
) -> Block:
    block: Block = _new(Block)
    _setattr(
        block,
        "__dict__",
        {
            "raw": raw,
            "kind": kind,
            "id": id,
            "type": type,
            "data": data,
            "retry": retry,
            "last_event_id": last_event_id,
        },
    )
    return block


def single_event_id_py(data: bytes) -> str | Literal[False] | None:
    """The id field of ``data`` when it is exactly one event block of the plain kind, else ``False``.

    The plain kind: LF line ends throughout or CRLF throughout (no lone CR, no mixing), lines that are only
    ``id``, ``event`` and ``data`` fields in any order (one or more ``data`` lines, with or without a value; a
    field name with no colon counts, as the spec says), then exactly one empty line. No comment, ``retry``,
    unknown field, BOM, empty line before the end, nor an id containing NUL: anything else is ``False``, and
    the general parser decides it. Several ids: the last one counts. ``None``: such an event without an id.
    What it returns is what :class:`SSEParser` gives as the one block's ``id``, for a stream between blocks
    (the caller checks that it is, and that ``data`` is not oversize). Runtime complexity: O(len(data)).

    The relay calls :data:`single_event_id`: this function, or the same contract in C where the optional
    extension is built. This one is the fallback and the oracle the tests hold the C one to.
    """
    # Written with one ``split`` (and two ``count`` for CRLF), then slices, comparisons and ``in`` on an integer
    # rather than more bytes methods: on this path (once per chunk relayed) each method call costs more than the
    # search it makes. ``b"\r" in data`` would be 15 times slower than ``13 in data``: it tries the needle as an
    # integer first and raises.
    if 13 in data:  # CRLF throughout, or not ours
        lines = data.split(b"\r\n")
        ends = len(lines) - 1
        if data.count(b"\n") != ends or data.count(b"\r") != ends:  # a lone CR or LF somewhere
            return False
    else:
        lines = data.split(b"\n")
    # The lines, then the two empty strings the final empty line leaves: at least one field line before them.
    if len(lines) < 3 or lines[-1] or lines[-2]:
        return False
    event_id: bytes | None = None
    dispatches = False
    for line in lines[:-2]:
        if line[:5] == b"data:" or line == b"data":
            dispatches = True
        elif line[:3] == b"id:":
            event_id = line[4:] if line[3:4] == b" " else line[3:]
            if 0 in event_id:  # ignored by the spec: the general parser keeps an earlier id, if any
                return False
        elif line[:6] == b"event:" or line == b"event":
            pass
        elif line == b"id":
            event_id = b""
        else:  # an empty line (two blocks), a comment, retry, another field, a BOM...
            return False
    if not dispatches:
        return False
    return None if event_id is None else event_id.decode("utf-8", "replace")


def whole_events_py(data: bytes) -> tuple[list[bytes], list[str | None]] | None:
    """The events of ``data`` when it is one or more whole events of the plain kind (see
    :func:`single_event_id_py`): their bytes, and their ids (each as ``single_event_id_py`` gives it). Else None:
    the parser decides. ``data`` is cut after each empty line (``\n\n``, or ``\r\n\r\n`` where it holds a
    CR), and each piece must be one plain event. What it returns is what :class:`SSEParser` gives for the same
    bytes fed to a stream between blocks: one ``EVENT`` block per event, with that ``raw`` and that ``id`` (the
    caller checks the stream is between blocks and the events are within its bound). Runtime complexity:
    O(len(data)).

    The relay calls :data:`whole_events` (this function, or the same contract in C) for a chunk of many events
    (an upstream that writes in batches, or a buffering layer in front of it), without making a :class:`Block`
    of each.
    """
    end = b"\r\n\r\n" if 13 in data else b"\n\n"
    pieces = data.split(end)
    if len(pieces) < 2 or pieces[-1]:
        return None
    raws: list[bytes] = []
    ids: list[str | None] = []
    for piece in pieces[:-1]:
        raw = piece + end
        event_id = single_event_id_py(raw)
        if event_id is False:
            return None
        raws.append(raw)
        ids.append(event_id)
    return raws, ids


def cut_at_blocks(chunk: bytes, idle: bool) -> tuple[bytes, ...]:
    """``chunk`` in up to three pieces, so that the middle one can be read whole by :func:`whole_events`: the end
    of a block a parser holds (to the chunk's first terminator; none when the parser is ``idle``), the blocks
    that follow (to its last terminator), the start of the next. The empty ones are left out.

    (Where the cuts fall changes no block, only how they are read: the parser gives the same blocks for any
    split of a stream. A socket read of an upstream that writes in batches ends inside an event now and then,
    and without the cuts its next read would go through the parser whole.) Runtime complexity: O(len(chunk)).
    """
    end = b"\n\n" if 13 not in chunk else b"\r\n\r\n"
    start = 0
    if not idle:
        first = chunk.find(end)
        if first < 0:
            return (chunk,)
        start = first + len(end)
    last = chunk.rfind(end)
    stop = last + len(end) if last >= start else start
    if start == 0 and stop == len(chunk):
        return (chunk,)
    return tuple(piece for piece in (chunk[:start], chunk[start:stop], chunk[stop:]) if piece)


def plain_batch(chunk: bytes, max_size: int) -> tuple[list[bytes], list[str | None]] | None:
    """:func:`whole_events` of ``chunk`` when they can be taken as one batch, as the relay and the keeper take
    them: none larger than ``max_size`` bytes, and ids on all of them or on none, none empty. Else None: the
    parser reads the chunk block by block (an oversize event goes on in pieces, an empty id resets the last
    one, and events with ids and without are each handled as they are). For a stream between blocks.
    """
    found = whole_events(chunk)
    if found is None:
        return None
    raws, ids = found
    if len(chunk) > max_size and max(map(len, raws)) > max_size:
        return None
    if "" in ids or ids.count(None) not in (0, len(ids)):
        return None
    return found


IdReader = Callable[[bytes], str | Literal[False] | None]
EventsReader = Callable[[bytes], tuple[list[bytes], list[str | None]] | None]


def _compiled() -> tuple[IdReader, EventsReader, bool]:
    """The C versions of :func:`single_event_id_py` and :func:`whole_events_py` when they are built for this
    Python and this source, and not turned off by ``SSE_RESUME_PURE_PYTHON`` (any value but empty or ``0``),
    else those functions."""
    python = single_event_id_py, whole_events_py, False
    if os.environ.get("SSE_RESUME_PURE_PYTHON", "0") not in ("", "0"):
        return python
    try:
        from sse_resume_core import _speedups
    except ImportError:  # not built (no C compiler at install), or built for another Python
        return python
    if getattr(_speedups, "ABI", None) != _SPEEDUPS_ABI:  # built from another version of _speedups.c
        return python
    return _speedups.single_event_id, _speedups.whole_events, True


_SPEEDUPS_ABI: Final = 3  # the SPEEDUPS_ABI of _speedups.c this module was written for
single_event_id, whole_events, COMPILED = _compiled()
"""single_event_id, whole_events: see :func:`single_event_id_py` and :func:`whole_events_py`, which they are, or
the same contracts in C where the optional extension (``_speedups.c``) is built (one reader of a plain event
there too); COMPILED: whether they are the C versions."""


class SSEParser:
    """Turns the bytes of one event stream into :class:`Block` values, incrementally.

    >>> p = SSEParser()
    >>> [b.data for b in p.feed(b"id: 1\\ndata: hel")]
    []
    >>> [(b.id, b.data) for b in p.feed(b"lo\\n\\n")]
    [('1', 'hello')]
    >>> p.last_event_id
    '1'

    Memory: at most ``max_size`` bytes of an unfinished block are held.
    """

    __slots__ = (
        "_at_start",
        "_closed",
        "_max",
        "_parts",
        "_size",
        "_skipping",
        "_tail",
        "last_event_id",
        "retry",
    )

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        if max_size < 1:
            raise ValueError("max_size must be positive")
        self._max = max_size
        # The unfinished block so far, as the pieces it arrived in (joined once, when the block completes, so a
        # block that trickles in a byte at a time costs linear time, not quadratic), their total size, and its
        # last three bytes: a terminator that straddles two chunks is found in tail + new data.
        self._parts: list[bytes] = []
        self._size = 0
        self._tail = b""
        self._at_start = True  # no byte of the stream has been resolved yet (a BOM may be arriving)
        self._skipping = False  # inside an oversize block: hand bytes on until its end
        self._closed = False
        self.last_event_id: str = ""
        """The last event id in force: what a client would send as ``Last-Event-ID`` now."""
        self.retry: int | None = None
        """The last valid ``retry`` value seen, in milliseconds (at most :data:`MAX_RETRY`), also from the
        complete lines of a final block that never dispatched."""

    @property
    def pending(self) -> int:
        """Bytes of an unfinished block held back, waiting for its end. Runtime complexity: O(1)."""
        return self._size

    def feed(self, data: bytes) -> list[Block]:
        """Parse ``data``; return the blocks it completes, in order. Runtime complexity: O(len(data)).

        Bytes of an unfinished block are held (up to ``max_size``) and returned with the block that completes
        them. Feeding after :meth:`close` returns the bytes as an ``UNFINISHED`` block.

        No input makes it raise; if it raised all the same (a bug), no byte would be lost: :meth:`held` then
        returns every byte not handed on yet (those held before the call, then ``data``), for a caller that
        passes the stream on untouched from there.
        """
        out: list[Block] = []
        if not data:
            return out
        data = bytes(data)
        if self._closed:
            out.append(_make(data, _UNFINISHED, None, "", None, None, self.last_event_id))
            return out
        parts = self._parts  # (the list held on entry: this call only appends to it, so it can be restored)
        held = len(parts)
        try:
            rest = self._start(data, out) if self._at_start else data
            if self._skipping and rest:
                rest = self._skip(rest, out)
            if not rest:
                return out
            if self._parts:
                context = self._tail + rest
                if not (b"\n\n" in context if b"\r" not in context else _TERMINATOR.search(context)):
                    self._hold(rest, out)
                    return out
                self._parts.append(rest)
                buf = b"".join(self._parts)
                self._parts = []
                self._size = 0
            else:
                buf = rest
            self._scan(buf, out, final=False)
        except Exception:
            self._restore(parts, held, data)
            raise
        return out

    def close(self) -> list[Block]:
        """Signal the end of input; return what the held bytes amount to. Runtime complexity: O(max_size).

        A trailing CR that was waiting for a possible LF now ends its line. Whatever is left of an unfinished
        block comes back as one ``UNFINISHED`` block: the spec discards it, and so does :attr:`last_event_id`,
        but a ``retry`` line of it that ended counts (the spec applies each field as its line is read).
        """
        out: list[Block] = []
        if self._closed:
            return out
        self._closed = True
        self._skipping = False
        self._at_start = False  # what is held at the start is at most the start of a BOM: not a BOM
        parts = self._parts
        if parts:
            try:
                buf = b"".join(parts)
                self._parts = []
                self._size = 0
                self._scan(buf, out, final=True)
                if self._parts:
                    rest = b"".join(self._parts)
                    retry = _retry_of_lines(rest)
                    if retry is not None:
                        self.retry = retry
                    out.append(_make(rest, _UNFINISHED, None, "", None, retry, self.last_event_id))
                    self._parts = []
                    self._size = 0
            except Exception:  # not expected: as in feed(), held() keeps every byte not handed on
                self._restore(parts, len(parts), b"")
                raise
        return out

    @property
    def idle(self) -> bool:
        """Nothing is held or being skipped, and the stream has started: the next byte starts a block."""
        return not (self._parts or self._skipping or self._at_start or self._closed)

    def held(self) -> bytes:
        """The bytes held back as an unfinished block, without consuming them. Runtime complexity: O(held)."""
        return b"".join(self._parts)

    # -- internals -------------------------------------------------------------------------------------------

    def _start(self, data: bytes, out: list[Block]) -> bytes:
        """The stream's first bytes: hand a leading BOM on alone; return what follows it (b"" while the first
        bytes could still be the start of a BOM: they are held)."""
        if self._parts:  # the start of a BOM (one or two bytes), held
            data = b"".join(self._parts) + data
            self._parts = []
            self._size = 0
            self._tail = b""
        if len(data) < 3 and _BOM.startswith(data):
            self._hold(data, out)
            return b""
        self._at_start = False
        if data.startswith(_BOM):
            out.append(_make(_BOM, _BOM_KIND, None, "", None, None, self.last_event_id))
            return data[3:]
        return data

    def _restore(self, parts: list[bytes], held: int, data: bytes) -> None:
        """After an unexpected error: hold the ``held`` first pieces of ``parts`` (what was held before the
        call that failed), then ``data``, so that :meth:`held` loses nothing."""
        del parts[held:]
        if data:
            parts.append(data)
        self._parts = parts
        self._size = sum(map(len, parts))
        self._tail = b"".join(parts)[-3:]
        self._skipping = False

    def _hold(self, data: bytes, out: list[Block]) -> None:
        """Keep ``data`` as part of the unfinished block, or hand it all on if the block is now oversize."""
        self._parts.append(data)
        self._size += len(data)
        self._tail = (self._tail + data)[-3:]
        if self._size > self._max:
            out.append(_make(b"".join(self._parts), _OVERSIZE, None, "", None, None, self.last_event_id))
            self._parts = []
            self._size = 0
            self._skipping = True
            self._at_start = False

    def _scan(self, buf: bytes, out: list[Block], final: bool) -> None:
        """Cut ``buf`` (which starts a block) into complete blocks; hold or hand on what is left."""
        if 13 not in buf:  # (``13 in``: an integer needle is found without building a bytes object)
            pos = self._uniform(buf, out, b"\n\n")
        elif buf.count(b"\r\n") == buf.count(b"\r") == buf.count(b"\n"):
            # CRLF throughout (what sse-starlette, so the MCP Python SDK, sends): an empty line is exactly
            # b"\r\n\r\n", and each block is read as LF once its CRLFs are replaced. Three counts of the whole
            # buffer cost less than one regex search for its terminators. The starlette shape (CRLF),
            # against httpx-sse's decoder (bench_parser.py, 5 MB, medians of 3 paired rounds): from 0.51x to
            # 0.90x in 16 KiB pieces, from 0.54x to 1.09x as HTTP chunks (the same shape with LF: 1.1x).
            pos = self._uniform(buf, out, b"\r\n\r\n")
        else:  # mixed line ends, lone CRs, or a CR at the end whose LF may come next
            pos = self._mixed(buf, out, final)
        if pos < len(buf):
            self._tail = b""
            if final:
                self._parts.append(buf[pos:])
            else:
                self._hold(buf[pos:] if pos else buf, out)

    def _uniform(self, buf: bytes, out: list[Block], terminator: bytes) -> int:
        """Cut ``buf``, whose line ends are all LF (``terminator`` b"\n\n") or all CRLF (b"\r\n\r\n"), into its
        complete blocks; return where the first unfinished one starts."""
        pos = 0
        size = self._max
        block = self._block
        append = out.append
        find = buf.find
        step = len(terminator)
        if step == 2:
            canonical, swapped, eol = _CANONICAL, _SWAPPED, b"\n"
        else:
            canonical, swapped, eol = _CANONICAL_CRLF, _SWAPPED_CRLF, b"\r\n"
        end = find(terminator)
        while end >= 0:
            stop = end + step
            if stop - pos > size:
                append(_make(buf[pos:stop], _OVERSIZE, None, "", None, None, self.last_event_id))
            else:
                # The block matched in place (pos, endpos: no copy of its body), its Block made inline (_make's
                # call is a tenth of a block's cost here).
                match = canonical(buf, pos, end)
                if match is not None:
                    eid, etype, value = match.groups()
                elif (match := swapped(buf, pos, end)) is not None:
                    etype, eid, value = match.groups()
                if match is None:
                    append(block(buf[pos:stop], buf[pos:end].split(eol)))
                else:
                    sid = None
                    if eid is not None:
                        sid = self.last_event_id = eid.decode("utf-8", "replace")
                    made: Block = _new(Block)
                    _setattr(
                        made,
                        "__dict__",
                        {
                            "raw": buf[pos:stop],
                            "kind": _EVENT,
                            "id": sid,
                            "type": etype.decode("utf-8", "replace") if etype else "message",
                            "data": value.decode("utf-8", "replace"),
                            "retry": None,
                            "last_event_id": self.last_event_id,
                        },
                    )
                    append(made)
            pos = stop
            end = find(terminator, pos)
        return pos

    def _mixed(self, buf: bytes, out: list[Block], final: bool) -> int:
        """Cut ``buf``, with line ends of any kind, into its complete blocks; return where the first unfinished
        one starts."""
        pos = 0
        size = self._max
        block = self._block
        append = out.append
        n = len(buf)
        for match in _TERMINATOR.finditer(buf):
            stop = match.end()
            if stop == n and not final and buf[-1] == 13:
                break  # a CR at the very end: the next chunk may start with its LF
            if stop - pos > size:
                append(_make(buf[pos:stop], _OVERSIZE, None, "", None, None, self.last_event_id))
            else:
                append(block(buf[pos:stop], _SPLIT_LINES(buf[pos : match.start()])))
            pos = stop
        return pos

    def _skip(self, data: bytes, out: list[Block]) -> bytes:
        """Hand on the bytes of an oversize block until its terminating empty line; return what follows it."""
        tail = self._tail
        joined = tail + data
        for match in _TERMINATOR.finditer(joined):
            stop = match.end()
            if stop == len(joined) and joined[-1] == 13:
                break  # ambiguous CR: decide with the next chunk
            cut = stop - len(tail)
            if cut < 0:
                continue  # inside bytes already handed on
            # cut == 0: a CR held back as ambiguous at the end of the last chunk is now known to end the block.
            if cut:
                out.append(_make(data[:cut], _OVERSIZE, None, "", None, None, self.last_event_id))
            self._skipping = False
            self._tail = b""
            return data[cut:]
        out.append(_make(data, _OVERSIZE, None, "", None, None, self.last_event_id))
        self._tail = joined[-3:]
        return b""

    def _block(self, raw: bytes, lines: list[bytes]) -> Block:
        """Interpret the lines of one complete block (without its terminating empty line)."""
        data: list[bytes] | None = None
        etype = b""
        eid: bytes | None = None
        retry: int | None = None
        for line in lines:
            if line.startswith(b"data:"):
                value = line[6:] if line.startswith(b"data: ") else line[5:]
                if data is None:
                    data = [value]
                else:
                    data.append(value)
                continue
            if not line or line[0] == 58:  # an empty line left over by the splitting, or ":" a comment
                continue
            name, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if name == b"id":
                if b"\x00" not in value:
                    eid = value
            elif name == b"event":
                etype = value
            elif name == b"retry":
                retry = _retry(value) if value.isdigit() else retry  # (isdigit: true for ASCII digits only)
            elif name == b"data":  # "data" with no colon: an empty line of data
                if data is None:
                    data = [b""]
                else:
                    data.append(b"")
        sid: str | None = None
        if eid is not None:
            sid = eid.decode("utf-8", "replace")
            self.last_event_id = sid
        if retry is not None:
            self.retry = retry
        if data is None:
            return _make(raw, _EMPTY, sid, "", None, retry, self.last_event_id)
        text = (data[0] if len(data) == 1 else b"\n".join(data)).decode("utf-8", "replace")
        return _make(
            raw,
            _EVENT,
            sid,
            etype.decode("utf-8", "replace") if etype else "message",
            text,
            retry,
            self.last_event_id,
        )


# The same shape with CRLF line ends throughout (sse-starlette's, so the MCP Python SDK's): SSEParser reads such
# a buffer's blocks in place with it, as it reads LF ones with _CANONICAL. Only for a buffer where every CR is
# followed by an LF: then a value is what "[^\n]*" takes back to before its CR (one step of backtracking), and
# "[^\n]" matches as a single-character test where "[^\r\n]" would be a set (that made it 20% slower).
_CANONICAL_CRLF: Final = re.compile(rb"(?:id: ?([^\n\x00]*)\r\n)?(?:event: ?([^\n]*)\r\n)?data: ?([^\n]*)").fullmatch

# The usual shape with "event" before "id", as the MCP TypeScript SDK writes it (its groups: event, id, data).
# (Read line by line, 8.1 us a block of 224 bytes, 0.58x of httpx-sse's decoder in 16 KiB pieces; in place, 5.3 us
# and 1.0x, LF and CRLF alike: bench_parser.py, 20 MB, medians of 3 paired rounds.)
_SWAPPED: Final = re.compile(rb"event: ?([^\n]*)\n(?:id: ?([^\n\x00]*)\n)?data: ?([^\n]*)").fullmatch
_SWAPPED_CRLF: Final = re.compile(rb"event: ?([^\n]*)\r\n(?:id: ?([^\n\x00]*)\r\n)?data: ?([^\n]*)").fullmatch


def parse(data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> list[Block]:
    """Parse a whole stream at once: :meth:`SSEParser.feed` then :meth:`SSEParser.close`.

    >>> [(b.kind.name, b.data) for b in parse(b"data: a\\n\\n: note\\n\\ndata: cut")]
    [('EVENT', 'a'), ('EMPTY', None), ('UNFINISHED', None)]
    """
    parser = SSEParser(max_size)
    return parser.feed(data) + parser.close()

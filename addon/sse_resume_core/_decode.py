"""Content-Encoding decoding for SSE bodies, so frames can be read. Sans-I/O: bytes in, bytes out.

The decompressors are the well-kept ones mitmproxy itself depends on: zlib (gzip, zlib and raw deflate), Brotli,
and Zstandard (``compression.zstd``, or its backport before Python 3.14). This module only drives them
incrementally and bounds what they produce.

The bounds. A body is hostile input: a few kilobytes of brotli can decode to gigabytes, or to millions of blank
lines, each of which the parser makes a block of. Output is limited by two budgets that grow with the input, one
of bytes and one of lines:

- Bytes: each compressed byte adds :data:`MAX_RATIO` bytes, and the unused budget carried from one chunk to the
  next is at most :data:`ALLOWANCE`. So a chunk of ``n`` bytes decodes to at most ``ALLOWANCE + MAX_RATIO * n``
  bytes, and a response as a whole to at most ``ALLOWANCE + MAX_RATIO * (its compressed size)``.
- Lines: the same with :data:`LINES_PER_BYTE` (one) and :data:`LINE_ALLOWANCE`: the byte bound's figures at 64
  bytes a line. A compressed byte then causes no more lines than it could hold uncompressed. A line is counted at
  each LF, or at each CR where there are more CRs than LFs (whichever is more), so a CRLF counts once. The parser
  works per line and per block (a block has two line ends at least), so this bounds the work of a chunk: about as
  much as the same number of bytes, uncompressed, could cost.

Each decompressor is asked for no more than the byte budget (plus one byte, to see that it is exceeded). Past
either bound nothing more is decoded, what decoded within both is returned, the decoder stops, and it says why in
:attr:`Decoder.error`.

Real event streams, compressed as they are sent (flushed after each event), decode to 7-16 times their size and
0.14-0.33 lines per compressed byte (LLM token streams in the OpenAI and Anthropic shapes, MCP progress
notifications, small numbered events, heartbeats; gzip, br and zstd), a third of the line bound at most. Compressed
as a whole they reach 28-115 times their size (the byte bound ends the long ones) and 0.6-2.1 lines per compressed
byte; those that keep within the byte bound keep within the line bound too (0.72 for MCP notifications in gzip),
except small numbered events (``id: 7`` and ``data: 7``: 1.9-2 in br and zstd) and bare counters (up to 6.7),
which pass for the allowance's worth only.
"""

from __future__ import annotations

import importlib
import sys
import zlib
from typing import Any, Final

__all__ = [
    "ALLOWANCE",
    "ENCODINGS",
    "LINES_PER_BYTE",
    "LINE_ALLOWANCE",
    "MAX_RATIO",
    "ZSTD_WINDOW_LOG",
    "Decoder",
    "UnsupportedEncoding",
    "decoder_for",
]

MAX_RATIO: Final = 64
"""Bytes a compressed byte may decode to, sustained."""
ALLOWANCE: Final = 2 * 1024 * 1024
"""Bytes a body may decode to beyond ``MAX_RATIO`` times its size, carried from chunk to chunk at most."""
LINES_PER_BYTE: Final = 1
"""Lines a compressed byte may decode to, sustained (``MAX_RATIO`` bytes, at 64 bytes a line)."""
LINE_ALLOWANCE: Final = 32 * 1024
"""Lines a body may decode to beyond ``LINES_PER_BYTE`` times its size, carried from chunk to chunk at most
(``ALLOWANCE`` bytes, at 64 bytes a line)."""
ZSTD_WINDOW_LOG: Final = 23
"""Largest Zstandard window accepted (8 MiB, the limit RFC 9659 sets for ``Content-Encoding: zstd``); a frame
asking for more would make the decoder allocate it, and does not decode."""

BROTLI_STEP: Final = 256 * 1024
_BROTLI_SHORT: Final = 16 * 1024  # a piece of brotli's output shorter than its first output block (32 KiB)
BROTLI_BEHIND: Final = 64 * 1024
"""Compressed bytes the second brotli decompressor is behind the first at most (see :class:`Decoder`)."""
_COUNT_STEP: Final = 64 * 1024  # bytes counted at a time to find where the line bound is passed

_brotli: Any
try:
    _brotli = importlib.import_module("brotli")
    _brotli.Decompressor().process(b"", output_buffer_limit=1)  # bounded output came with Brotli 1.2
except Exception:  # not installed, or too old to bound its output: br is then passed through untouched
    _brotli = None

_zstd: Any
try:
    _zstd = importlib.import_module("compression.zstd" if sys.version_info >= (3, 14) else "backports.zstd")
except ImportError:  # zstd is then passed through untouched
    _zstd = None

ENCODINGS: Final = frozenset(
    {"gzip", "x-gzip", "deflate"} | ({"br"} if _brotli is not None else set()) | ({"zstd"} if _zstd else set())
)
"""The Content-Encoding values a :class:`Decoder` decodes (one encoding; a list of several is not decoded)."""


class UnsupportedEncoding(ValueError):
    """A Content-Encoding this module does not decode: the body is to be passed on untouched."""


def decoder_for(content_encoding: str | None) -> Decoder | None:
    """The decoder for a response's Content-Encoding header value; None for none (absent, empty, identity).
    Raises :class:`UnsupportedEncoding` for one that is not decoded."""
    if content_encoding is None:
        return None
    value = content_encoding.strip().lower()
    return None if value in ("", "identity") else Decoder(value)


class _Exceeded(Exception):
    """The body decodes past its bound."""


class _Trailing(Exception):
    """Bytes after the end of a compressed stream that has no further members."""


def _lines(data: bytes, start: int = 0, end: int | None = None) -> int:
    """Lines in ``data[start:end]``, as the line bound counts them: LFs or CRs, whichever are more."""
    return max(data.count(b"\n", start, end), data.count(b"\r", start, end))


def _cut(data: bytes, room: int) -> int:
    """The length of the longest start of ``data`` that has at most ``room`` lines (``data`` has more).
    Runtime complexity: O(len(data)): each step counted once, then a binary search inside the last one."""
    lf = cr = 0
    start = 0
    while True:  # (ends: data as a whole has more than ``room`` lines)
        end = start + _COUNT_STEP
        more_lf, more_cr = data.count(b"\n", start, end), data.count(b"\r", start, end)
        if max(lf + more_lf, cr + more_cr) > room:
            break
        lf, cr, start = lf + more_lf, cr + more_cr, end
    low, high = start, min(end, len(data))  # lines(data[:low]) <= room < lines(data[:high])
    while high - low > 1:
        middle = (low + high) // 2
        if max(lf + data.count(b"\n", start, middle), cr + data.count(b"\r", start, middle)) <= room:
            low = middle
        else:
            high = middle
    return low


class Decoder:
    """Incremental decoder of one body: :meth:`decode` each chunk, :meth:`finish` at the body's clean end.

    Neither raises. Once the body turns out corrupt or decodes past its bounds (see the module), the decoder
    stops: :attr:`error` says why (sizes and a library's message, never payload bytes) and it returns nothing
    more. What it decoded before that, within the bounds, is returned: also what the last chunk decoded to before
    its fault (the bytes after the end of a stream, or corrupt ones).

    gzip may have several members, one after the other (RFC 1952 2.2), and zstd several frames (RFC 8878 3.1): each
    is decoded in turn. ``deflate`` is zlib-wrapped (RFC 9110 8.4.1.2) or, as some servers send it, raw: zlib's
    own header check on the first two bytes decides.

    Brotli's decompressor, given the end of a stream and bytes after it in one call, raises and returns nothing of
    that call (it tells no unused input apart). So a br body is decoded twice: a second decompressor follows the
    first, behind it by at most :data:`BROTLI_BEHIND` compressed bytes (held, and given to it in one call), and
    when the first fails on a chunk, the second catches up and takes that chunk a byte at a time, which finds the
    stream's end (or the corrupt byte) exactly. That doubles brotli's own work (small next to the parser's) and
    its memory.

    Memory: the decompressor's state (gzip/deflate 32 KiB windows, brotli up to 16 MiB twice, zstd up to 8 MiB, see
    :data:`ZSTD_WINDOW_LOG`) and, per call, at most the byte bound's worth of output.
    """

    __slots__ = (
        "_brotli",
        "_brotli_behind",
        "_brotli_pending",
        "_brotli_pending_size",
        "_head",
        "_leftover",
        "_lines_left",
        "_zlib",
        "_zstd",
        "consumed",
        "encoding",
        "error",
        "lines",
        "produced",
    )

    def __init__(self, encoding: str) -> None:
        """``encoding``: a Content-Encoding value. Raises :class:`UnsupportedEncoding` for one not in
        :data:`ENCODINGS`."""
        self.encoding = encoding.strip().lower()
        if self.encoding not in ENCODINGS:
            raise UnsupportedEncoding(self.encoding)
        self.consumed = 0
        """Compressed bytes taken so far."""
        self.produced = 0
        """Decoded bytes returned so far."""
        self.lines = 0
        """Lines returned so far (as the line bound counts them)."""
        self.error = ""
        """Why decoding stopped ("" while it goes on)."""
        self._leftover = ALLOWANCE
        self._lines_left = LINE_ALLOWANCE
        self._head = b""  # deflate: the first bytes, until there are two to tell zlib from raw
        self._zlib: Any = None
        self._brotli: Any = None
        self._brotli_behind: Any = None  # brotli: the second decompressor, behind the first by the bytes pending
        self._brotli_pending: list[bytes] = []
        self._brotli_pending_size = 0
        self._zstd: Any = None
        if self.encoding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(47)  # a gzip header, or a zlib one (as mitmproxy accepts)
        elif self.encoding == "br":
            self._brotli = _brotli.Decompressor()
            self._brotli_behind = _brotli.Decompressor()
        elif self.encoding == "zstd":
            self._zstd = self._zstd_frame()

    def decode(self, chunk: bytes) -> bytes:
        """The decoded bytes of ``chunk`` (maybe ``b""``: a decompressor holds bytes until it can use them)."""
        if self.error or not chunk:
            return b""
        taken = len(chunk)
        self.consumed += taken
        room = self._leftover + MAX_RATIO * taken
        out: list[bytes] = []
        error = ""
        try:
            if self._brotli is not None:
                self._brotli_decode(chunk, room, out)
            elif self._zstd is not None:
                self._zstd_decode(chunk, room, out)
            else:
                self._zlib_decode(chunk, room, out)
        except _Exceeded:
            error = (
                f"decodes past the bound: more than {self.produced + room} bytes from {self.consumed} "
                f"(at most {MAX_RATIO} times the compressed size, plus {ALLOWANCE >> 20} MiB)"
            )
        except _Trailing:
            error = f"has bytes after the end of its {self.encoding} data (at byte {self.consumed})"
        except Exception as e:  # the libraries' errors (zlib.error, brotli.error, ZstdError) and anything else
            error = f"does not decode as {self.encoding} near byte {self.consumed} ({_reason(e)})"
        data = out[0] if len(out) == 1 else b"".join(out)
        size = len(data)
        if size > room:  # (past the byte bound: the excess is dropped)
            data = data[:room]
            size = room
        line_room = self._lines_left + LINES_PER_BYTE * taken
        lines = data.count(b"\n")
        if 13 in data:  # (as _lines(data); ``13 in`` is the quick test for a CR: see the parser's single_event_id)
            lines = max(lines, data.count(b"\r"))
        if lines > line_room:
            data = data[: _cut(data, line_room)]
            size = len(data)
            lines = _lines(data)
            error = (
                f"decodes past the line bound: more than {self.lines + line_room} lines from {self.consumed} "
                f"bytes (at most {LINES_PER_BYTE} per compressed byte, plus {LINE_ALLOWANCE})"
            )
        if error:
            self.error = error
        self.produced += size
        self.lines += lines
        self._leftover = min(room - size, ALLOWANCE)
        self._lines_left = min(line_room - lines, LINE_ALLOWANCE)
        return data

    def finish(self) -> bytes:
        """At the clean end of the body: what is left (nothing, as every call returns all it can); :attr:`error`
        is set when the body ended inside compressed data."""
        if self.error or not self.consumed:
            return b""
        if self._brotli is not None:
            done = self._brotli.is_finished()
        elif self._zstd is not None:
            done = self._zstd.eof
        else:
            done = self._zlib is not None and self._zlib.eof
        if not done:
            self.error = f"ended inside its {self.encoding} data (after {self.consumed} bytes)"
        return b""

    # -- one per library: each appends to ``out`` and raises _Exceeded once more than ``room`` came out -------

    def _zlib_decode(self, data: bytes, room: int, out: list[bytes]) -> None:
        d = self._zlib
        if d is None:  # deflate: zlib's header check on the first two bytes tells zlib-wrapped from raw
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return
            self._head = b""
            d = zlib.decompressobj(zlib.MAX_WBITS)
            try:
                d.decompress(data[:2])
                data = data[2:]
            except zlib.error:
                d = zlib.decompressobj(-zlib.MAX_WBITS)
            self._zlib = d
        while data:
            if d.eof:
                if self.encoding == "deflate":
                    raise _Trailing
                d = self._zlib = zlib.decompressobj(47)  # the next gzip member
            piece = d.decompress(data, room + 1)  # (max_length 0 would mean no limit: room + 1 is at least 1)
            if piece:
                out.append(piece)
                room -= len(piece)
                if room < 0:
                    raise _Exceeded
            data = d.unused_data if d.eof else d.unconsumed_tail

    def _brotli_decode(self, data: bytes, room: int, out: list[bytes]) -> None:
        if self._brotli.is_finished():
            raise _Trailing
        start = len(out)
        try:
            _brotli_take(self._brotli, data, room, out)
        except _Exceeded:
            raise  # (decoding stops: the second decompressor is not needed any more)
        except Exception as e:
            # The stream's end and bytes after it, or a corrupt byte: all this call gave out is lost. The second
            # decompressor catches up with the first as it was before this chunk, and takes it a byte at a time.
            del out[start:]
            self._brotli_catch_up()
            _brotli_bytewise(self._brotli_behind, data, room, out)
            raise e from None  # (not expected: the second decompressor took it all, the first did not)
        self._brotli_pending.append(data)
        self._brotli_pending_size += len(data)
        if self._brotli_pending_size >= BROTLI_BEHIND:
            self._brotli_catch_up()

    def _brotli_catch_up(self) -> None:
        """Give the second brotli decompressor the bytes it is behind (all of them decoded by the first: what they
        decode to is known to be within the bound, and is dropped here, in steps)."""
        pending = self._brotli_pending
        if pending:
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            pending.clear()
            self._brotli_pending_size = 0
            _brotli_take(self._brotli_behind, data, ALLOWANCE + MAX_RATIO * len(data), None)

    def _zstd_decode(self, data: bytes, room: int, out: list[bytes]) -> None:
        z = self._zstd
        while data:
            if z.eof:
                z = self._zstd = self._zstd_frame()  # the next frame
            piece = z.decompress(data, max_length=room + 1)
            if piece:
                out.append(piece)
                room -= len(piece)
            if room < 0 or (not z.needs_input and not z.eof):
                raise _Exceeded
            data = z.unused_data if z.eof else b""

    @staticmethod
    def _zstd_frame() -> Any:
        return _zstd.ZstdDecompressor(options={_zstd.DecompressionParameter.window_log_max: ZSTD_WINDOW_LOG})


def _brotli_take(b: Any, data: bytes | memoryview, room: int, out: list[bytes] | None) -> int:
    """Feed ``data`` to the brotli decompressor ``b``; append what comes out to ``out`` (None: drop it); return the
    room left. Raises _Exceeded once more than ``room`` came out, and the library's error for a fault."""
    # In steps: brotli stops growing its output once past the limit, which it may pass by up to as much again.
    # A call may also give out less than it holds, even with all input taken and below the limit: one block of
    # its output buffer (32 KiB) at a time, once a chunk decodes to more. So it is asked again, with no input,
    # after a call that gave out that much, until it gives less (a shorter piece is all it had).
    limit = min(room, BROTLI_STEP) + 1
    piece = b.process(data, output_buffer_limit=limit)
    while True:
        size = len(piece)
        if out is not None:
            out.append(piece)
        room -= size
        if room < 0:
            raise _Exceeded
        if size < _BROTLI_SHORT and b.can_accept_more_data():  # all of ``data`` taken, all it gave out
            return room
        if not size:  # (not expected: nothing came, yet brotli holds input)
            raise _Exceeded
        limit = min(room, BROTLI_STEP) + 1
        piece = b.process(b"", output_buffer_limit=limit)


def _brotli_bytewise(b: Any, data: bytes, room: int, out: list[bytes]) -> None:
    """Feed ``data`` to ``b`` a byte at a time, appending what comes out, until the stream's end (then raises
    _Trailing: bytes follow it) or a fault (the library's error): what came before either is in ``out``."""
    view = memoryview(data)
    for i in range(len(view)):
        if b.is_finished():
            raise _Trailing
        room = _brotli_take(b, view[i : i + 1], room, out)


def _reason(error: Exception) -> str:
    """A library's error message, short (they describe the fault, not the data)."""
    text = str(error) or type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."

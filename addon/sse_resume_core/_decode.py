"""Content-Encoding decoding for SSE bodies, so frames can be read. Sans-I/O: bytes in, bytes out.

The decompressors are the well-kept ones mitmproxy itself depends on: zlib (gzip, zlib and raw deflate), Brotli,
and Zstandard (``compression.zstd``, or its backport before Python 3.14). This module only drives them
incrementally and bounds what they produce.

The bound. A body is hostile input: a few kilobytes of brotli can decode to gigabytes. Output is limited by a
budget that grows with the input: each compressed byte adds :data:`MAX_RATIO` bytes, and the unused budget carried
from one chunk to the next is at most :data:`ALLOWANCE`. So a chunk of ``n`` bytes decodes to at most
``ALLOWANCE + MAX_RATIO * n`` bytes, and a response as a whole to at most ``ALLOWANCE + MAX_RATIO * (its compressed
size)``. Each decompressor is asked for no more than the budget (plus one byte, to see that it is exceeded): past
the bound nothing more is decoded, the decoder stops, and says why in :attr:`Decoder.error`. Real event streams,
compressed as they are sent, decode to 3-20 times their size (about 55 for repetitive JSON compressed as a whole).
"""

from __future__ import annotations

import importlib
import sys
import zlib
from typing import Any, Final

__all__ = [
    "ALLOWANCE",
    "ENCODINGS",
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
ZSTD_WINDOW_LOG: Final = 23
"""Largest Zstandard window accepted (8 MiB, the limit RFC 9659 sets for ``Content-Encoding: zstd``); a frame
asking for more would make the decoder allocate it, and does not decode."""

BROTLI_STEP: Final = 256 * 1024

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


class Decoder:
    """Incremental decoder of one body: :meth:`decode` each chunk, :meth:`finish` at the body's clean end.

    Neither raises. Once the body turns out corrupt or decodes past its bound (see the module), the decoder
    stops: :attr:`error` says why (sizes and a library's message, never payload bytes) and it returns nothing
    more. What it decoded before that, within the bound, is returned.

    gzip may have several members, one after the other (RFC 1952 2.2), and zstd several frames (RFC 8878 3.1): each
    is decoded in turn. ``deflate`` is zlib-wrapped (RFC 9110 8.4.1.2) or, as some servers send it, raw: zlib's
    own header check on the first two bytes decides.

    Memory: the decompressor's state (gzip/deflate 32 KiB windows, brotli up to 16 MiB, zstd up to 8 MiB, see
    :data:`ZSTD_WINDOW_LOG`) and, per call, at most the bound's worth of output.
    """

    __slots__ = ("_brotli", "_head", "_leftover", "_zlib", "_zstd", "consumed", "encoding", "error", "produced")

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
        self.error = ""
        """Why decoding stopped ("" while it goes on)."""
        self._leftover = ALLOWANCE
        self._head = b""  # deflate: the first bytes, until there are two to tell zlib from raw
        self._zlib: Any = None
        self._brotli: Any = None
        self._zstd: Any = None
        if self.encoding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(47)  # a gzip header, or a zlib one (as mitmproxy accepts)
        elif self.encoding == "br":
            self._brotli = _brotli.Decompressor()
        elif self.encoding == "zstd":
            self._zstd = self._zstd_frame()

    def decode(self, chunk: bytes) -> bytes:
        """The decoded bytes of ``chunk`` (maybe ``b""``: a decompressor holds bytes until it can use them)."""
        if self.error or not chunk:
            return b""
        self.consumed += len(chunk)
        room = self._leftover + MAX_RATIO * len(chunk)
        out: list[bytes] = []
        try:
            if self._brotli is not None:
                self._brotli_decode(chunk, room, out)
            elif self._zstd is not None:
                self._zstd_decode(chunk, room, out)
            else:
                self._zlib_decode(chunk, room, out)
        except _Exceeded:
            size = sum(map(len, out))
            self.error = (
                f"decodes past the bound: more than {self.produced + size} bytes from {self.consumed} "
                f"(at most {MAX_RATIO} times the compressed size, plus {ALLOWANCE >> 20} MiB)"
            )
            data = b"".join(out)[: max(room, 0)]
            self.produced += len(data)
            return data
        except _Trailing:
            self.error = f"has bytes after the end of its {self.encoding} data (at byte {self.consumed})"
        except Exception as e:  # the libraries' errors (zlib.error, brotli.error, ZstdError) and anything else
            self.error = f"does not decode as {self.encoding} near byte {self.consumed} ({_reason(e)})"
        data = out[0] if len(out) == 1 else b"".join(out)
        self.produced += len(data)
        self._leftover = min(room - len(data), ALLOWANCE)
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
        b = self._brotli
        if b.is_finished():
            raise _Trailing
        # In steps: brotli stops growing its output once past the limit, which it may pass by up to as much again.
        # Output that reached the limit may have more behind it, whether or not brotli can take more input.
        limit = min(room, BROTLI_STEP) + 1
        piece = b.process(data, output_buffer_limit=limit)
        while True:
            out.append(piece)
            room -= len(piece)
            if room < 0:
                raise _Exceeded
            if len(piece) < limit and b.can_accept_more_data():  # all of ``data`` taken, all it gave out
                return
            if not piece:  # (not expected: nothing came, yet brotli holds more)
                raise _Exceeded
            limit = min(room, BROTLI_STEP) + 1
            piece = b.process(b"", output_buffer_limit=limit)

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


def _reason(error: Exception) -> str:
    """A library's error message, short (they describe the fault, not the data)."""
    text = str(error) or type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."

"""Content-Encoding decoding for SSE bodies, so frames can be read. Sans-I/O: bytes in, bytes out."""

from __future__ import annotations

import zlib
from collections.abc import Callable

__all__ = ["Decoder"]


class Decoder:
    """Incremental Content-Encoding decoder: ``decoder(chunk)`` for each chunk, ``decoder(b"")`` at the end.

    gzip and deflate always; br and zstd when their modules (which mitmproxy installs) are there. An unknown
    encoding raises ValueError, a missing module ImportError.
    """

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._feed: Callable[[bytes], bytes]
        self._flush: Callable[[], bytes]
        if encoding in ("gzip", "x-gzip", "deflate"):
            d = zlib.decompressobj(47 if encoding != "deflate" else zlib.MAX_WBITS)
            self._feed, self._flush = d.decompress, d.flush
        elif encoding == "br":
            import brotli

            b = brotli.Decompressor()
            self._feed, self._flush = b.process, lambda: b""
        elif encoding == "zstd":
            import zstandard

            z = zstandard.ZstdDecompressor().decompressobj()
            self._feed, self._flush = z.decompress, z.flush
        else:
            raise ValueError(encoding)

    def __call__(self, chunk: bytes) -> bytes:
        return self._feed(chunk) if chunk else self._flush()

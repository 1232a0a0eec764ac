"""The keeper's HTTP/1.1 client for upstreams: one request per connection, the body read in socket-sized batches.

A general client (httpx) hands an event stream on one HTTP chunk at a time, through several async generators
per chunk; a fast upstream sends one event per chunk, so that cost is paid per event. This client gives the
keeper everything one socket read brought (often hundreds of events) at once. h11 does the HTTP framing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from typing import Final
from urllib.parse import urlsplit

import h11

from sse_resume_core._resume import digest

__all__ = ["Upstream", "UpstreamError", "insecure_context", "open_upstream"]

READ_SIZE: Final = 256 * 1024
CONNECT_TIMEOUT: Final = 10.0
HEAD_TIMEOUT: Final = 30.0  # seconds from the request to the response head
MAX_HEAD: Final = 256 * 1024


class UpstreamError(Exception):
    """The upstream could not be reached, or broke the HTTP exchange.

    Its text is safe to log and to show: it never quotes the upstream's bytes (see :func:`broken`).
    """


# The start of h11's messages, kept when a message starts with one; what follows (often the offending bytes,
# payload or header values) never is.
_H11_WHAT: Final = (
    "illegal chunk header",
    "illegal header line",
    "illegal status line",
    "Illegal header name",
    "Illegal header value",
    "Response status_code",
    "bad Content-Length",
    "conflicting Content-Length headers",
    "continuation line at start of headers",
    "no response line received",
    "peer unexpectedly closed connection",
    "Receive buffer too long",
    "Transfer-Encoding",
)


def broken(error: h11.ProtocolError, received: int) -> str:
    """What broke in the upstream's HTTP, said without any of its bytes: the kind of error, how many bytes had
    come, and the size and a digest of h11's message (which quotes the bytes)."""
    text = str(error)
    what = next((w for w in _H11_WHAT if text.startswith(w)), "malformed HTTP")
    return f"{what} after {received} bytes (h11's message: {len(text)} characters, digest {digest(text, 4)})"


def insecure_context() -> ssl.SSLContext:
    """TLS without any verification (mitmproxy's ``ssl_insecure``)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class Upstream:
    """One response from the upstream, its head read, its body to come."""

    def __init__(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: h11.Response,
        received: int = 0,
    ) -> None:
        self._conn = conn
        self._received = received  # bytes of the response read so far, for an error's message
        self._reader = reader
        self._writer = writer
        self.status: int = head.status_code
        self.reason: bytes = bytes(head.reason)
        self.headers: list[tuple[bytes, bytes]] = [(bytes(k), bytes(v)) for k, v in head.headers.raw_items()]
        """The response's headers, the bytes as they came (names in their own case)."""

    def header(self, name: str) -> str:
        """The first value of header ``name``, its bytes read as Latin-1 (for comparisons; "" when absent)."""
        key = name.lower().encode()
        return next((v.decode("latin-1") for k, v in self.headers if k.lower() == key), "")

    async def body(self) -> AsyncIterator[bytes]:
        """The body, as it comes: each piece is all that one socket read completed. Ends at the body's end;
        raises :class:`UpstreamError` when the connection breaks first."""
        conn = self._conn
        while True:
            parts: list[bytes] = []
            error: UpstreamError | None = None
            try:
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        break
                    if isinstance(event, h11.Data):
                        parts.append(bytes(event.data))
                    elif isinstance(event, h11.EndOfMessage):
                        if parts:
                            yield b"".join(parts)
                        return
            except h11.RemoteProtocolError as e:
                error = UpstreamError(f"broken response: {broken(e, self._received)}")
            if parts:  # what came whole before a break is the upstream's too
                yield parts[0] if len(parts) == 1 else b"".join(parts)
            if error is not None:
                raise error
            try:
                data = await self._reader.read(READ_SIZE)
            except OSError as e:
                raise UpstreamError(f"connection lost: {e}") from None
            self._received += len(data)
            conn.receive_data(data)

    def close(self) -> None:
        self._writer.transport.abort()


def wire(text: str) -> bytes:
    """The bytes of a header value or target that mitmproxy gave as text.

    mitmproxy decodes header bytes as UTF-8 with ``surrogateescape`` (any byte that is not UTF-8 becomes a lone
    surrogate); encoding the same way gives back exactly the bytes the client sent.
    """
    return text.encode("utf-8", "surrogateescape")


async def open_upstream(
    method: str, url: str, headers: list[tuple[str, str]], body: bytes, tls: ssl.SSLContext | None
) -> Upstream:
    """Send one request and read the response head. Raises :class:`UpstreamError`.

    ``headers`` are as mitmproxy gives them (text decoded from the client's bytes, see :func:`wire`); they go
    upstream as the bytes the client sent, whatever they are.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UpstreamError(f"cannot fetch {parts.scheme or '?'}:// URLs")
    secure = parts.scheme == "https"
    host = parts.hostname
    try:
        port = parts.port or (443 if secure else 80)
    except ValueError:
        raise UpstreamError("the URL's port is not a number") from None
    context = (tls or ssl.create_default_context()) if secure else None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=host if secure else None, limit=MAX_HEAD),
            CONNECT_TIMEOUT,
        )
    except (OSError, TimeoutError, ssl.SSLError) as e:
        raise UpstreamError(f"cannot connect: {e or type(e).__name__}") from None
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
    head_bytes = [0]  # bytes of the response read so far, for an error's message
    try:
        sent = [(wire(k), wire(v)) for k, v in headers if k.lower() not in ("content-length", "transfer-encoding")]
        if not any(k.lower() == b"host" for k, _ in sent):
            sent.insert(0, (b"Host", wire(parts.netloc.rpartition("@")[2])))
        if body or method in ("POST", "PUT", "PATCH"):
            sent.append((b"Content-Length", b"%d" % len(body)))
        target = wire((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
        out = conn.send(h11.Request(method=wire(method), target=target, headers=sent))
        if body:
            out += conn.send(h11.Data(data=body))
        out += conn.send(h11.EndOfMessage())
        writer.write(out)
        head = await asyncio.wait_for(_head(conn, reader, head_bytes), HEAD_TIMEOUT)
    except h11.ProtocolError as e:
        writer.transport.abort()
        raise UpstreamError(f"no response: {broken(e, head_bytes[0])}") from None
    except (OSError, TimeoutError, ssl.SSLError) as e:
        writer.transport.abort()
        raise UpstreamError(f"no response: {e or type(e).__name__}") from None
    except BaseException:
        writer.transport.abort()
        raise
    return Upstream(conn, reader, writer, head, head_bytes[0])


async def _head(conn: h11.Connection, reader: asyncio.StreamReader, received: list[int]) -> h11.Response:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(READ_SIZE)
            received[0] += len(data)
            conn.receive_data(data)
            if not data:
                with contextlib.suppress(h11.RemoteProtocolError):
                    conn.next_event()
                raise UpstreamError("connection closed before a response")
            continue
        if isinstance(event, h11.Response):
            return event
        # an informational response (100 Continue, 103 Early Hints): the real one follows

"""Keep mode against hostile traffic, through a real mitmdump: header bytes that are not ASCII, an event far
larger than ``sse_max_event_bytes``, POST streams that end, upstreams whose bytes must never reach the log.

The upstreams here are written by hand on asyncio (raw HTTP bytes, so a test controls every byte), in the test's
own event loop; the clients are raw sockets. Events are read with httpx-sse's decoder or compared as bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from httpx_sse import ServerSentEvent
from httpx_sse._decoders import SSEDecoder, SSELineDecoder

from harness import Mitmdump, free_port, wait_for

Handler = Callable[["Exchange"], Awaitable[None]]


def sse_events(body: bytes) -> list[ServerSentEvent]:
    """The events in ``body`` with data, as a spec-following client (httpx-sse) reads them."""
    lines, decoder = SSELineDecoder(), SSEDecoder()
    events = []
    for line in [*lines.decode(body.decode("utf-8", "replace")), *lines.flush()]:
        event = decoder.decode(line)
        if event is not None and event.data:
            events.append(event)
    return events


def addon_noise(log: str) -> list[str]:
    """The addon's tracebacks and internal errors in a mitmdump log.

    mitmproxy itself logs a CancelledError traceback for every client connection still open at SIGTERM (with no
    addon at all): a traceback counts only when one of its frames or its task is the addon's.
    """
    entries = re.split(r"\n(?=\[\d)", log)  # an entry: a timestamped line and the lines under it
    trouble = ("Traceback", "destroyed but it is pending", "never retrieved")
    return [
        entry
        for entry in entries
        if "read() called while" in entry
        or "sse-resume: internal error" in entry
        or (any(word in entry for word in trouble) and "sse_resume" in entry)
    ]


# -- a hand-written upstream ---------------------------------------------------------------------------------------


@dataclass
class Exchange:
    """One request to the hand-written upstream: its head as received, its body, and the connection."""

    head: bytes
    body: bytes
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def header(self, name: bytes) -> bytes | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def chunk(self, data: bytes) -> None:
        await self.send(b"%x\r\n%s\r\n" % (len(data), data))


@dataclass
class HandUpstream:
    """An HTTP/1.1 server on 127.0.0.1 that gives each request to ``handler`` (the same for every request)."""

    handler: Handler
    exchanges: list[Exchange] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                exchange = Exchange(head, b"", reader, writer)
                length = int(exchange.header(b"content-length") or b"0")
                exchange.body = await reader.readexactly(length)
                self.exchanges.append(exchange)
                await self.handler(exchange)
        writer.close()


@contextlib.asynccontextmanager
async def hand_upstream(port: int, handler: Handler) -> AsyncIterator[HandUpstream]:
    upstream = HandUpstream(handler)
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", port)
    try:
        yield upstream
    finally:
        upstream.done.set()
        server.close()
        for exchange in upstream.exchanges:
            exchange.writer.transport.abort()


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"


# -- a raw client --------------------------------------------------------------------------------------------------


class RawClient:
    """One HTTP/1.1 request written byte for byte; the response head kept raw, the body de-chunked."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.head = b""
        self.status = 0
        self.body = bytearray()
        self.ended = False
        self._chunked = False
        self._left = 0  # bytes left of the current chunk

    @classmethod
    async def open(cls, port: int, request: bytes) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        writer.write(request)
        client.head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        client.status = int(client.head.split(b" ", 2)[1])
        client._chunked = b"chunked" in (client.header(b"transfer-encoding") or b"").lower()
        length = client.header(b"content-length")
        if length is not None and not client._chunked:
            client.body += await reader.readexactly(int(length))
            client.ended = True
        return client

    def header(self, name: bytes) -> bytes | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None

    async def read_some(self, size: int = 65536) -> bytes:
        """The next piece of the body, at most ``size`` bytes (b"" at its end)."""
        if self.ended:
            return b""
        if not self._chunked:
            data = await self.reader.read(size)
        else:
            if not self._left:
                line = await self.reader.readuntil(b"\r\n")
                self._left = int(line.split(b";")[0], 16)
                if not self._left:
                    await self.reader.readuntil(b"\r\n")
                    self.ended = True
                    return b""
            data = await self.reader.read(min(size, self._left))
            self._left -= len(data)
            if data and not self._left:
                await self.reader.readexactly(2)
        if not data:
            self.ended = True
        self.body += data
        return data

    async def read_until(self, marker: bytes | None, timeout: float = 30, pace: float = 0) -> None:
        """Read until the body holds ``marker`` (None: until its end). ``pace``: seconds between reads, for a
        slow reader (the reader's speed, not a wait for anything)."""

        async def reading() -> None:
            while not self.ended:
                data = await self.read_some()
                if marker is not None and marker in self.body[-(len(data) + len(marker)) :]:
                    return
                if pace:
                    await asyncio.sleep(pace)

        if marker is None or marker not in self.body:
            await asyncio.wait_for(reading(), timeout)

    def abort(self) -> None:
        self.writer.transport.abort()


def get(path: bytes, *headers: bytes) -> bytes:
    lines = [b"GET " + path + b" HTTP/1.1", b"Host: 127.0.0.1", b"Accept: text/event-stream", *headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def keep_proxy(tmp: Path, port: int, *options: str) -> Mitmdump:
    return Mitmdump(tmp, port, ["sse_keep_upstream=true", *options])


MAX_EVENT = 64 * 1024  # sse_max_event_bytes of the shared proxy: a client is dropped past 8 times this queued


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mitmdump, int]]:
    """One keep-mode mitmdump for the module, and the port its upstream is to listen on (each test starts its
    own hand-written upstream there)."""
    port = free_port()
    with keep_proxy(tmp_path_factory.mktemp("hostile"), port, f"sse_max_event_bytes={MAX_EVENT}") as p:
        yield p, port


# -- 1. header bytes that are not ASCII ------------------------------------------------------------------------------

# UTF-8 (what browsers send for a cookie set by script), and bytes that are not UTF-8 at all (Latin-1).
COOKIE = b"sid=caf\xc3\xa9; legacy=\xe9t\xe9"
LAST_ID = b"\xc3\xa9v\xc3\xa9nement-7"
SESSION = b"s\xc3\xa9ssion-\xff"
RESPONSE_HEADERS = [(b"X-Latin", b"caf\xe9 cr\xe8me"), (b"X-Utf8", b"\xe2\x9c\x93 ok")]


@pytest.mark.parametrize("side", ["request", "response", "both"])
def test_non_ascii_header_bytes_are_served_and_pass_as_they_came(proxy: tuple[Mitmdump, int], side: str) -> None:
    mitmdump, port = proxy
    request_side = side in ("request", "both")
    response_side = side in ("response", "both")

    async def upstream(exchange: Exchange) -> None:
        extra = b"".join(b"%s: %s\r\n" % pair for pair in RESPONSE_HEADERS) if response_side else b""
        await exchange.send(SSE_HEAD + extra + b"\r\n")
        for n in (1, 2, 3):
            await exchange.chunk(b"id: %d\ndata: event %d\n\n" % (n, n))
        await upstream_done.wait()

    upstream_done = asyncio.Event()
    headers = [b"Cookie: " + COOKIE, b"Last-Event-ID: " + LAST_ID, b"mcp-session-id: " + SESSION]

    async def scenario() -> tuple[RawClient, list[Exchange]]:
        async with hand_upstream(port, upstream) as hand:
            path = b"/sse/headers-" + side.encode()
            client = await RawClient.open(mitmdump.port, get(path, *(headers if request_side else [])))
            if client.status == 200:
                await client.read_until(b"data: event 3\n\n")
            else:
                await client.read_until(None)
            client.abort()
            upstream_done.set()
            return client, hand.exchanges

    client, exchanges = asyncio.run(scenario())
    log = mitmdump.output
    assert client.status == 200, (client.head, bytes(client.body), log)
    assert [e.data for e in sse_events(bytes(client.body))] == ["event 1", "event 2", "event 3"]
    assert b"kept" in (client.header(b"sse-resume") or b"")
    assert addon_noise(log) == []
    (exchange,) = exchanges  # one upstream request, read by the keeper
    if request_side:
        assert exchange.header(b"cookie") == COOKIE
        assert exchange.header(b"last-event-id") == LAST_ID  # unknown to the proxy: forwarded as it came
        assert exchange.header(b"mcp-session-id") == SESSION
    if response_side:
        for name, value in RESPONSE_HEADERS:
            assert client.header(name) == value, client.head


# -- 2. POST streams that end, and shutdown ----------------------------------------------------------------------------


def test_post_streams_that_end_and_shutdown_log_no_traceback(tmp_path: Path) -> None:
    """MCP-like calls (each a POST answered with an SSE stream that ends), then SIGTERM with kept streams open (one
    with its client attached, one whose client went away): nothing in the log but the usual lines."""
    port = free_port()
    proxy = keep_proxy(tmp_path, port)

    async def upstream(exchange: Exchange) -> None:
        await exchange.send(SSE_HEAD + b"\r\n")
        if exchange.head.startswith(b"POST"):
            call = exchange.body.decode()
            await exchange.chunk(b'id: %s-1\ndata: {"progress": 1}\n\n' % call.encode())
            await exchange.chunk(b'id: %s-2\ndata: {"result": "%s"}\n\n' % (call.encode(), call.encode()))
            await exchange.send(b"0\r\n\r\n")
            return
        for n in range(1, 4):
            await exchange.chunk(b"id: %d\ndata: live %d\n\n" % (n, n))
        await hand_done.wait()  # a live stream: open until the end of the test

    hand_done = asyncio.Event()
    headers = {"accept": "application/json, text/event-stream", "mcp-protocol-version": "2025-11-25"}

    async def scenario() -> list[list[str]]:
        results = []
        async with hand_upstream(port, upstream), httpx.AsyncClient(base_url=proxy.url, timeout=20) as client:
            for call in ("initialize", "tools-list", "tools-call"):
                response = await client.post("/mcp", headers=headers, content=call.encode())
                assert response.status_code == 200 and response.headers["sse-resume"] == "kept"
                results.append([e.data for e in sse_events(response.content)])
            attached = await RawClient.open(proxy.port, get(b"/sse/attached"))
            await attached.read_until(b"live 1")
            away = await RawClient.open(proxy.port, get(b"/sse/away"))
            await away.read_until(b"live 1")
            away.abort()  # its kept stream reads on while the client is away
            await asyncio.to_thread(proxy.stop)  # SIGTERM while both kept streams are open
            attached.abort()
            hand_done.set()
        return results

    try:
        results = asyncio.run(scenario())
    finally:
        proxy.stop()
    log = proxy.output
    for call, events in zip(("initialize", "tools-list", "tools-call"), results, strict=True):
        assert events == ['{"progress": 1}', f'{{"result": "{call}"}}'], events
    assert proxy.proc.returncode == 0, log
    assert "kept stream" in log and "ended: proxy shutting down" in log  # the shutdown did reach the keeper
    assert addon_noise(log) == []


# -- 3. logs: no upstream bytes, no ids that link sessions ---------------------------------------------------------


def test_upstream_bytes_never_reach_the_log(proxy: tuple[Mitmdump, int]) -> None:
    """An upstream that breaks its HTTP framing in the body (a chunk header that is an SSE line) and in the head
    (a header line without a colon): the log says what broke, with sizes and digests, never the bytes."""
    mitmdump, port = proxy

    async def upstream(exchange: Exchange) -> None:
        if b"/sse/badhead" in exchange.head:
            await exchange.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nSECRET-TOKEN-in-a-head\r\n\r\n")
            return
        await exchange.send(SSE_HEAD + b"\r\n")
        await exchange.chunk(b"id: 1\ndata: fine\n\n")
        await exchange.send(b"data: SECRET-PAYLOAD-in-a-body\r\n\r\n")  # no chunk size: the framing breaks
        await upstream_done.wait()

    upstream_done = asyncio.Event()

    async def scenario() -> tuple[RawClient, RawClient]:
        async with hand_upstream(port, upstream):
            body = await RawClient.open(mitmdump.port, get(b"/sse/badbody?retry=50"))
            await body.read_until(b"data: fine")
            await asyncio.to_thread(wait_for, lambda: "upstream broke" in mitmdump.output, 20, "the log line")
            body.abort()
            head = await RawClient.open(mitmdump.port, get(b"/sse/badhead"))
            await head.read_until(None)
            await asyncio.to_thread(wait_for, lambda: "unreachable" in mitmdump.output, 20, "the log line")
            upstream_done.set()
            return body, head

    body, head = asyncio.run(scenario())
    log = mitmdump.output
    assert body.status == 200 and head.status == 502
    assert "SECRET" not in log, [line for line in log.splitlines() if "SECRET" in line]
    assert "illegal chunk header after" in log and "illegal header line after" in log  # what broke, and sizes
    assert b"SECRET" not in bytes(head.body)  # nor in the 502's explanation to the client
    assert addon_noise(log) == []


def test_id_digests_in_log_lines_do_not_link_sessions(tmp_path: Path, upstream_port: int) -> None:
    """The same Last-Event-ID in two sessions: two unrelated digests in the log; in one session, the same one."""
    from harness import read_events

    event_id = "ID-SECRET-0042"
    with Mitmdump(tmp_path, upstream_port) as plain:
        for session in ("alice", "bob", "alice"):
            headers = {"accept": "text/event-stream", "last-event-id": event_id, "mcp-session-id": session}
            read_events(f"{plain.url}/sse?interval=0.02", 1, headers)
        wait_for(lambda: plain.output.count(", id ") >= 3, 20, "three ids in the log")
        log = plain.output
    digests = re.findall(r"sse-resume: session \w+: miss \(.*\), id (\w+)", log)
    assert len(digests) == 3, log
    alice, bob, alice_again = digests
    assert alice == alice_again and alice != bob
    assert event_id not in log


# -- 4. an event far larger than sse_max_event_bytes -----------------------------------------------------------------


def big_event(size: int) -> bytes:
    """An event of about ``size`` bytes, of numbered data lines: any piece of it parses as an event of its own."""
    line = b"data: %08d " + b"x" * 985 + b"\n"
    return b"".join(line % n for n in range(size // len(line))) + b"\n"


SMALL_1, SMALL_3 = b"id: 1\ndata: before\n\n", b"id: 3\ndata: after\n\n"


def test_an_oversize_event_reaches_a_slow_client_whole(proxy: tuple[Mitmdump, int]) -> None:
    """A 32 MiB event (512 times sse_max_event_bytes) sent at once, read by a slow client: the client gets the
    upstream's bytes exactly, the event whole (it is too large to keep, so the proxy passes it on no faster than
    the client reads)."""
    mitmdump, port = proxy
    event = big_event(32 * 1024 * 1024)
    sent = SMALL_1 + event + SMALL_3

    async def upstream(exchange: Exchange) -> None:
        await exchange.send(SSE_HEAD + b"\r\n")
        for start in range(0, len(sent), 256 * 1024):
            exchange.writer.write(
                b"%x\r\n%s\r\n" % (len(sent[start : start + 256 * 1024]), sent[start : start + 256 * 1024])
            )
        await exchange.writer.drain()
        await upstream_done.wait()

    upstream_done = asyncio.Event()

    async def scenario() -> RawClient:
        async with hand_upstream(port, upstream):
            client = await RawClient.open(mitmdump.port, get(b"/sse/big-slow"))
            await client.read_until(b"data: after\n\n", timeout=120, pace=0.002)
            client.abort()
            upstream_done.set()
            return client

    client = asyncio.run(scenario())
    assert client.status == 200 and not client.ended
    body = bytes(client.body)
    assert len(body) == len(sent) and body == sent, (len(body), len(sent))
    assert [e.data for e in sse_events(body)][::2] == ["before", "after"]


def test_a_resume_during_an_oversize_event_starts_at_the_next_event_and_says_so(proxy: tuple[Mitmdump, int]) -> None:
    """The client goes in the middle of an oversize event and comes back while it is still coming: it must not
    get the event's tail (it would read it as an event); it gets a comment saying what it missed, then the next
    events."""
    mitmdump, port = proxy
    event = big_event(2 * 1024 * 1024)
    half = len(event) // 2
    go_on = asyncio.Event()

    async def upstream(exchange: Exchange) -> None:
        await exchange.send(SSE_HEAD + b"\r\n")
        await exchange.chunk(SMALL_1 + event[:half])
        await go_on.wait()  # until the client is back
        await exchange.chunk(event[half:] + SMALL_3)
        await go_on.wait()
        await upstream_done.wait()

    upstream_done = asyncio.Event()

    async def scenario() -> tuple[RawClient, RawClient]:
        async with hand_upstream(port, upstream):
            first = await RawClient.open(mitmdump.port, get(b"/sse/big-resume"))
            await first.read_until(b"data: %08d" % 100)  # well into the oversize event
            first.abort()
            back = await RawClient.open(mitmdump.port, get(b"/sse/big-resume", b"Last-Event-ID: 1"))
            go_on.set()
            await back.read_until(b"data: after\n\n")
            back.abort()
            upstream_done.set()
            return first, back

    _, back = asyncio.run(scenario())
    assert back.status == 200 and b"kept" in (back.header(b"sse-resume") or b"")
    body = bytes(back.body)
    assert [e.data for e in sse_events(body)] == ["after"], body[:300]
    assert b"x" * 100 not in body  # nothing of the oversize event
    assert b": sse-resume: " in body and b"too large" in body  # and the client is told

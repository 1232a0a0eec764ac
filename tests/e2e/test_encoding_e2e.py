"""Compressed SSE through a real mitmdump, plain and in keep mode: decoded completely, bounded, or left alone.

The upstream is this file's own: a small asyncio server on 127.0.0.1 (in a thread) that sends each case exactly
as written below, whatever was asked. Clients are httpx with httpx-sse's decoder, or raw bytes.

- Every encoding the addon decodes arrives decoded: gzip of several members, zlib and raw deflate, br, zstd of
  several frames.
- A decompression bomb (512 MiB of zeros in under a kilobyte of brotli; also zstd and gzip) ends its response at
  the documented bound, logged, while the proxy's RSS stays within a fixed allowance and another client's stream
  keeps flowing. A stall is measured without a clock: that client's upstream sends an event every 10 ms, and
  what a frozen proxy could not forward arrives in one burst when it thaws, so the most events any one socket read
  brought is the longest freeze, in events.
- So does a bomb of tiny blocks that keeps within the byte bound (blank lines, one-byte events, empty comments:
  millions of blocks from a few dozen kilobytes): it ends at the line bound, with the same guarantees. Its
  longest freeze is held to the one above, or (on a busy machine) to three times what the same blocks cost sent
  uncompressed, as many as the bound lets through, measured just before in the same test.
- A body that does not decode ends its response after what did, also when the end of a brotli stream and the
  bytes after it come in one chunk; one whose encoding is not decoded, and every non-200 response, passes through
  with its headers and bytes untouched.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import itertools
import random
import socket
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import brotli
import httpx
import pytest
from httpx_sse import connect_sse

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd  # (what mitmproxy installs before Python 3.14)

from harness import Mitmdump, RssSampler, rss_kib
from sse_resume_core._decode import ALLOWANCE, LINE_ALLOWANCE, LINES_PER_BYTE, MAX_RATIO

EVENTS = [b"id: %d\ndata: event %d\n\n" % (n, n) for n in range(1, 6)]
BODY = b"".join(EVENTS)
BOMB_SIZE = 512 << 20
RSS_ALLOWANCE_MIB = 64  # what a bomb may add to the proxy's RSS (measured: a few MiB)
GOOD_INTERVAL = 0.01  # seconds between the other client's events
LONGEST_FREEZE = 100  # events: 1 s of the other client's stream (measured: 1-3 in one read)


@dataclass
class Case:
    """One response, sent as written: ``chunks`` one write each (chunked, or one Content-Length body)."""

    chunks: list[bytes]
    encoding: str | None
    status: int = 200
    chunked: bool = True
    ctype: str = "text/event-stream"
    hold: bool = False  # after the chunks, send nothing more, and hold the connection until the proxy closes it

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


def pieces(data: bytes, *cuts: int) -> list[bytes]:
    points = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points) if data[a:b]]


def brotli_bomb() -> bytes:
    c = brotli.Compressor(quality=3)
    zeros = b"\0" * (16 << 20)
    return b"".join(c.process(zeros) for _ in range(BOMB_SIZE // len(zeros))) + c.finish()


def lines_of(data: bytes) -> int:
    """Line ends, as the line bound counts them: LF or CR, whichever is more."""
    return max(data.count(b"\n"), data.count(b"\r"))


def compress(data: bytes, encoding: str) -> bytes:
    if encoding == "br":
        return brotli.compress(data, quality=5)
    if encoding == "zstd":
        return zstd.compress(data, level=3)
    return gzip.compress(data, 6)


def tiny_blocks(unit: bytes, encoding: str, size: int = 4 << 20) -> tuple[bytes, bytes]:
    """A bomb that keeps within the byte bound: ``size`` bytes of ``unit`` (a blank line, a tiny event) again and
    again, every 56 KiB of them after a comment of 1 KiB of random text, which compresses to about its size, so
    that the body decodes to less than MAX_RATIO times its compressed size. (decoded, compressed)"""
    rng = random.Random(18)
    parts: list[bytes] = []
    total = 0
    while total < size:
        parts.append(b": " + base64.b64encode(rng.randbytes(1024)) + b"\n\n")
        parts.append(unit * (56 * 1024 // len(unit)))
        total += len(parts[-1]) + len(parts[-2])
    decoded = b"".join(parts)
    compressed = compress(decoded, encoding)
    assert len(decoded) <= MAX_RATIO * len(compressed)  # within the byte bound, whatever the chunks
    return decoded, compressed


def admitted(decoded: bytes, compressed: bytes) -> bytes:
    """The start of ``decoded`` that has as many lines as the line bound lets ``compressed`` decode to (LF lines)."""
    lines = LINE_ALLOWANCE + LINES_PER_BYTE * len(compressed)
    return decoded[: len(b"\n".join(decoded.split(b"\n", lines)[:lines])) + 1]


def zstd_bomb() -> bytes:
    """512 MiB of zeros in one zstd frame, compressed 16 MiB at a time (the test's own memory stays small)."""
    c = zstd.ZstdCompressor(level=3)
    zeros = b"\0" * (16 << 20)
    return b"".join(c.compress(zeros) for _ in range(BOMB_SIZE // len(zeros))) + c.flush()


MEMBERS = b"".join(gzip.compress(e) for e in EVENTS)
DECODED = {
    "gzip-members": Case(pieces(MEMBERS, 7, 40, 41, len(MEMBERS) - 3), "gzip"),
    "gzip-members-one-chunk": Case([MEMBERS], "gzip"),
    "deflate-raw": Case(pieces(raw_deflate(BODY), 1, 5), "deflate"),
    "deflate-zlib": Case(pieces(zlib.compress(BODY), 1, 5), "deflate"),
    "br": Case(pieces(brotli.compress(BODY), 3), "br"),
    "zstd-frames": Case([zstd.compress(BODY[:30]) + zstd.compress(BODY[30:])], "zstd"),
    "gzip-content-length": Case([gzip.compress(BODY)], "gzip", chunked=False),
}
UNTOUCHED = {
    "error-503-gzip": Case([gzip.compress(b"data: unavailable\n\n")], "gzip", status=503, chunked=False),
    "error-500-br-chunked": Case(pieces(brotli.compress(b"data: broken\n\n"), 4), "br", status=500),
    "unknown-encoding": Case([b"\x1f\x9d\x90compressed"], "compress"),
    "stacked-encodings": Case([brotli.compress(gzip.compress(BODY))], "gzip, br"),
}
BOMBS: dict[str, tuple[str, Callable[[], bytes]]] = {
    "br": ("br", brotli_bomb),
    "zstd": ("zstd", lambda: zstd_bomb()),
    "gzip": ("gzip", lambda: gzip.compress(b"\0" * (1 << 20), 9) * (BOMB_SIZE >> 20)),  # 512 members
}
TINY_BOMBS = {
    "blank-lines-br": tiny_blocks(b"\n", "br"),
    "empty-comments-gzip": tiny_blocks(b":\n\n", "gzip"),
    "tiny-events-zstd": tiny_blocks(b"data:x\n\n", "zstd"),
}
BR_END = brotli.compress(BODY)
TRAILING = b"\x00 bytes after the end of the brotli stream"


def big_flushes() -> tuple[bytes, list[bytes]]:
    """Three flushes of a brotli stream that each decode to about 120 KiB (brotli's decompressor gives out about
    32 KiB a call): the decoded stream, and the chunks."""
    rng = random.Random(32)
    c = brotli.Compressor(quality=5)
    parts = [
        b"".join(b"id: %d\ndata: %s\n\n" % (n, rng.randbytes(300).hex().encode()) for n in range(k, k + 200))
        for k in (1, 201, 401)
    ]
    return b"".join(parts), [c.process(part) + c.flush() for part in parts]


BIG_TEXT, BIG_CHUNKS = big_flushes()


@dataclass
class Upstream:
    """The upstream: ``cases`` by path; ``/good/...`` is an endless identity stream, an event every 10 ms."""

    cases: dict[str, Case] = field(default_factory=dict)
    requests: Counter[str] = field(default_factory=Counter)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            server.close()
            loop.run_until_complete(server.wait_closed())
            loop.close()

        threading.Thread(target=run, daemon=True).start()
        assert ready.wait(10)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            self.requests[path] += 1
            if path.startswith("/good/"):
                await self._good(writer)
            else:
                await self._send(reader, writer, self.cases[path.partition("?")[0]])
        writer.close()

    @staticmethod
    async def _send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, case: Case) -> None:
        head = f"HTTP/1.1 {case.status} X\r\nContent-Type: {case.ctype}\r\nConnection: close\r\n"
        if case.encoding:
            head += f"Content-Encoding: {case.encoding}\r\n"
        head += "Transfer-Encoding: chunked\r\n" if case.chunked else f"Content-Length: {len(case.body)}\r\n"
        writer.write(head.encode() + b"\r\n")
        for chunk in case.chunks:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if case.chunked else chunk)
            await writer.drain()
            await asyncio.sleep(0.005)  # (pacing, so the chunks come in separate reads; nothing waits on it)
        if case.hold:
            await reader.read()  # (the proxy sends nothing more: this returns when it closes the connection)
            return
        if case.chunked:
            writer.write(b"0\r\n\r\n")
        await writer.drain()

    @staticmethod
    async def _good(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for n in range(1, 12_001):  # two minutes at most
            event = b"id: %d\ndata: good %d\n\n" % (n, n)
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
            await asyncio.sleep(GOOD_INTERVAL)  # the upstream's pace, not a wait for anything


class GoodClient:
    """A client on a raw socket in a thread, reading the endless stream: how many events, and the most in one
    socket read (counted on the raw bytes)."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
        self.events = 0
        self.longest_burst = 0
        self.longest_gap = 0.0
        self._last = time.monotonic()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        tail = b""
        with contextlib.suppress(OSError):
            while not self._stop:
                data = self.sock.recv(1 << 20)
                if not data:
                    return
                seen = tail + data
                n = seen.count(b"data: good ")
                tail = seen[-16:]
                n -= tail.count(b"data: good ")  # counted with the next read instead
                self.events += n
                self.longest_burst = max(self.longest_burst, n)
                now = time.monotonic()
                self.longest_gap = max(self.longest_gap, now - self._last)  # (printed, never asserted on)
                self._last = now

    def wait_for(self, events: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.events < events:
            assert time.monotonic() < deadline, f"the other client got {self.events} events, not {events}"
            time.sleep(0.01)  # (polling a condition, with a deadline)

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)
        self.sock.close()


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    for name, case in {**DECODED, **UNTOUCHED}.items():
        up.cases[f"/{name}"] = case
    up.cases["/corrupt"] = Case([gzip.compress(EVENTS[0]), EVENTS[1]], "gzip")  # a gzip member, then plain bytes
    # The end of a brotli stream and bytes after it, in one chunk: the whole stream, or its last 4 bytes.
    up.cases["/br-trailing"] = Case([BR_END + TRAILING], "br")
    up.cases["/br-trailing-split"] = Case([BR_END[:-4], BR_END[-4:] + TRAILING], "br")
    up.cases["/br-big-flushes"] = Case(BIG_CHUNKS, "br", hold=True)  # (the stream goes on: nothing ends it)
    for name, (decoded, compressed) in TINY_BOMBS.items():
        up.cases[f"/tiny-{name}"] = Case([compressed], name.rsplit("-", 1)[1], chunked=False)
        up.cases[f"/tiny-{name}-identity"] = Case([admitted(decoded, compressed)], None, hold=True)
    for name, (encoding, make) in BOMBS.items():
        up.cases[f"/bomb-{name}"] = Case([make()], encoding, chunked=False)
    up.start()
    yield up
    up.stop()


@pytest.fixture(scope="module", params=["plain", "keep"])
def proxy(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
) -> Iterator[Mitmdump]:
    options = ["sse_keep_upstream=true"] if request.param == "keep" else []
    with Mitmdump(tmp_path_factory.mktemp(request.param), upstream.port, options) as p:
        p.mode = request.param  # type: ignore[attr-defined]
        yield p


def read_events(url: str, count: int) -> tuple[httpx.Response, list[tuple[str, str]]]:
    """Up to ``count`` events (id, data), with httpx-sse, until the response ends or goes quiet for 10 s."""
    got: list[tuple[str, str]] = []
    with httpx.Client(timeout=10) as client, connect_sse(client, "GET", url) as source:
        with contextlib.suppress(httpx.ReadTimeout):
            for sse in source.iter_sse():
                got.append((sse.id, sse.data))
                if len(got) >= count:
                    break
        return source.response, got


def read_raw(url: str, limit: int = 1 << 31, until: int = 0) -> tuple[httpx.Response, bytes]:
    """The body as it came (de-chunked, not decoded), at most ``limit`` bytes kept; ``until``: hang up once that
    many have come (a stream that does not end)."""
    kept = bytearray()
    with httpx.Client(timeout=30) as client, client.stream("GET", url, headers={"accept": "text/event-stream"}) as r:
        for data in r.iter_raw():
            if len(kept) < limit:
                kept += data[: limit - len(kept)]
            if until and len(kept) >= until:
                break
        return r, bytes(kept)


@pytest.mark.parametrize("name", list(DECODED))
def test_every_encoding_is_decoded_completely(proxy: Mitmdump, upstream: Upstream, name: str) -> None:
    response, events = read_events(f"{proxy.url}/{name}", 5)
    assert events == [(str(n), f"event {n}") for n in range(1, 6)], proxy.output[-2000:]
    assert "content-encoding" not in response.headers
    assert "Traceback" not in proxy.output


@pytest.mark.parametrize("name", list(UNTOUCHED))
def test_what_is_not_decoded_and_every_error_pass_through_untouched(
    proxy: Mitmdump, upstream: Upstream, name: str
) -> None:
    case = UNTOUCHED[name]
    response, body = read_raw(f"{proxy.url}/{name}")
    assert response.status_code == case.status
    assert response.headers["content-encoding"] == case.encoding
    assert body == case.body  # byte for byte, still compressed
    if not case.chunked:
        assert response.headers["content-length"] == str(len(case.body))


def test_a_body_that_stops_decoding_ends_the_response_after_what_decoded(proxy: Mitmdump, upstream: Upstream) -> None:
    response, body = read_raw(f"{proxy.url}/corrupt")
    assert "content-encoding" not in response.headers
    assert body == EVENTS[0]  # the first event, then the end: no undecodable bytes passed off as text
    assert "the gzip body does not decode as gzip" in proxy.output
    assert "Traceback" not in proxy.output


@pytest.mark.parametrize("name", ["br-trailing", "br-trailing-split"])
def test_what_decoded_before_bytes_after_a_brotli_end_reaches_the_client(
    proxy: Mitmdump, upstream: Upstream, name: str
) -> None:
    mode = proxy.mode  # type: ignore[attr-defined]
    response, body = read_raw(f"{proxy.url}/{name}?{mode}")
    assert "content-encoding" not in response.headers
    assert body == BODY  # every event of the stream, then the end
    assert "the br body has bytes after the end of its br data" in proxy.output
    assert upstream.requests[f"/{name}?{mode}"] == 1  # (keep mode: the stream ended, no reconnection)
    assert "Traceback" not in proxy.output


def test_what_a_brotli_flush_decodes_to_reaches_the_client_at_once(proxy: Mitmdump, upstream: Upstream) -> None:
    """Each flush decodes to more than brotli gives out in one call: all of it reaches the client before anything
    more comes (the stream stays open after the last)."""
    mode = proxy.mode  # type: ignore[attr-defined]
    response, body = read_raw(f"{proxy.url}/br-big-flushes?{mode}", until=len(BIG_TEXT))
    assert "content-encoding" not in response.headers
    assert body == BIG_TEXT
    assert "Traceback" not in proxy.output


def read_sampled(proxy: Mitmdump, url: str) -> tuple[httpx.Response, bytes, int, int]:
    """Read ``url`` (64 MiB at most) while sampling the proxy's RSS: the response, its body, and the RSS before and
    at its peak (KiB)."""
    pid = proxy.proc.pid
    baseline = rss_kib(pid)
    sampler = RssSampler(pid, period=0.02)
    try:
        response, body = read_raw(url, limit=64 << 20)
    finally:
        peak = sampler.stop()
    return response, body, baseline, peak


@pytest.mark.parametrize("name", list(BOMBS))
def test_a_bomb_ends_at_the_bound_without_memory_or_a_stall(proxy: Mitmdump, upstream: Upstream, name: str) -> None:
    bomb = upstream.cases[f"/bomb-{name}"].body
    mode = proxy.mode  # type: ignore[attr-defined]
    good = GoodClient(proxy.port, f"/good/{mode}/{name}")
    try:
        good.wait_for(20)  # the other stream flows
        response, body, baseline, peak = read_sampled(proxy, f"{proxy.url}/bomb-{name}?{mode}")
        during = good.events
        good.wait_for(during + 20)  # and flows on
    finally:
        good.close()
    print(
        f"\n{mode} {name} bomb: {len(bomb)} bytes; the client got {len(body)} bytes; RSS {baseline >> 10} MiB, "
        f"peak {peak >> 10} MiB; the other client's longest burst: {good.longest_burst} events"
    )
    assert (peak - baseline) >> 10 <= RSS_ALLOWANCE_MIB
    assert good.longest_burst < LONGEST_FREEZE
    assert response.status_code == 200 and "content-encoding" not in response.headers
    assert len(body) <= ALLOWANCE + MAX_RATIO * len(bomb) and body.count(0) == len(body)
    assert f"the {upstream.cases[f'/bomb-{name}'].encoding} body decodes past the bound" in proxy.output
    assert upstream.requests[f"/bomb-{name}?{mode}"] == 1  # (keep mode: the stream ended, no reconnection)
    assert "Traceback" not in proxy.output


@pytest.mark.parametrize("name", list(TINY_BOMBS))
def test_a_bomb_of_tiny_blocks_ends_at_the_line_bound_without_memory_or_a_stall(
    proxy: Mitmdump, upstream: Upstream, name: str
) -> None:
    decoded, bomb = TINY_BOMBS[name]
    mode = proxy.mode  # type: ignore[attr-defined]
    good = GoodClient(proxy.port, f"/good/{mode}/tiny-{name}")
    try:
        good.wait_for(20)  # the other stream flows
        # What the same blocks cost uncompressed, as many as the bound lets through (the same lines, parsed alike)
        good.longest_burst, good.longest_gap = 0, 0.0
        expected = admitted(decoded, bomb)
        # (all but its last block, held by the proxy until its end, which never comes: each block is under 2 KiB)
        _, plain = read_raw(f"{proxy.url}/tiny-{name}-identity?{mode}", until=len(expected) - 2048)
        assert expected.startswith(plain)
        good.wait_for(good.events + 20)
        identity = good.longest_burst, good.longest_gap
        good.longest_burst, good.longest_gap = 0, 0.0
        response, body, baseline, peak = read_sampled(proxy, f"{proxy.url}/tiny-{name}?{mode}")
        during = good.events
        good.wait_for(during + 20)  # and flows on
    finally:
        good.close()
    print(
        f"\n{mode} {name}: {len(bomb)} bytes decoding to {len(decoded)} bytes, {lines_of(decoded)} lines; the client "
        f"got {len(body)} bytes, {lines_of(body)} lines; RSS {baseline >> 10} MiB, peak {peak >> 10} MiB; the other "
        f"client's longest burst {good.longest_burst} events, longest wait {good.longest_gap:.2f} s (the same lines "
        f"uncompressed: {identity[0]} events, {identity[1]:.2f} s)"
    )
    assert (peak - baseline) >> 10 <= RSS_ALLOWANCE_MIB
    assert good.longest_burst < max(LONGEST_FREEZE, 3 * identity[0])
    assert response.status_code == 200 and "content-encoding" not in response.headers
    assert decoded.startswith(body)  # what decoded within the bound, as it came
    assert lines_of(body) <= LINE_ALLOWANCE + LINES_PER_BYTE * len(bomb) < lines_of(decoded)
    assert f"the {name.rsplit('-', 1)[1]} body decodes past the line bound" in proxy.output
    assert upstream.requests[f"/tiny-{name}?{mode}"] == 1  # (keep mode: the stream ended, no reconnection)
    assert "Traceback" not in proxy.output

"""The keeper (sse_resume_keep._keeper), in process: its server and its upstream client on loopback sockets."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_resume_core import HistoryLimits, MemoryHistory

if TYPE_CHECKING:
    from sse_resume_keep._keeper import ClientQueues

# -- the keeper with header bytes that are not ASCII (fuzzed) --------------------------------------------------------

_value = st.binary(min_size=1, max_size=40).map(
    lambda b: bytes(c if c >= 0x80 or 0x21 <= c <= 0x7E else 0x61 + c % 26 for c in b)
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cookie=_value, last_id=_value, session=_value, back=_value)
def test_fuzzed_header_bytes_pass_through_the_keeper_both_ways(
    cookie: bytes, last_id: bytes, session: bytes, back: bytes
) -> None:
    """Any header bytes a client or an upstream may send (UTF-8 or not): the keeper serves the request, the
    upstream gets the client's bytes and the client the upstream's, exactly."""
    from mitmproxy.http import Headers

    from sse_resume_core._resume import Resumer
    from sse_resume_keep import Keeper, KeepSettings, UpstreamRequest

    last_id = b"v" + last_id  # (never a proxy-made id)
    sent = Headers(
        [(b"Accept", b"text/event-stream"), (b"Cookie", cookie), (b"Last-Event-ID", last_id), (b"X-S", session)]
    )

    async def example() -> tuple[bytes, bytes]:
        seen: list[bytes] = []

        async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(await reader.readuntil(b"\r\n\r\n"))
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nX-Back: %s\r\n" % back
            writer.write(head + b"Content-Length: 15\r\n\r\nid: 1\ndata: a\n\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(upstream, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        keeper = Keeper(Resumer(MemoryHistory(HistoryLimits())), KeepSettings())
        keeper.start()
        try:
            request = UpstreamRequest("GET", f"http://127.0.0.1:{port}/sse", tuple(sent.items(multi=True)))
            token = keeper.admit("s", request, last_id.decode("utf-8", "surrogateescape"))
            assert token is not None
            while keeper._server is None:  # the keeper listens from a task it started at once
                await asyncio.sleep(0)
            reader, writer = await asyncio.open_connection("127.0.0.1", keeper.port)
            writer.write(b"GET /sse HTTP/1.1\r\nHost: k\r\nx-sse-resume-keep: %s\r\n\r\n" % token.encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.close()
            return head, seen[0] if seen else b""
        finally:
            await keeper.aclose()
            server.close()

    head, upstream_head = asyncio.run(example())
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert b"\r\nX-Back: %s\r\n" % back in head
    for name, value in ((b"Cookie", cookie), (b"Last-Event-ID", last_id), (b"X-S", session)):
        assert b"\r\n%s: %s\r\n" % (name, value) in upstream_head, (name, upstream_head)


def test_a_client_that_takes_nothing_of_an_oversize_event_is_dropped_after_the_grace_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While an oversize event is under way the keeper waits for its clients; one that reads nothing at all is
    dropped after sse_keep_grace seconds, and the kept stream reads on.

    The same grace then stops a stream left without clients (other tests check that): here it is held off, so
    that the test does not depend on the rest of the 16 MiB arriving within it (on a busy machine it did not).
    """
    from sse_resume_core._resume import Resumer
    from sse_resume_keep import Keeper, KeepSettings, UpstreamRequest
    from sse_resume_keep._keeper import KeptStream

    monkeypatch.setattr(KeptStream, "_grace_over", lambda self: None)

    big = b"data: " + b"x" * (16 * 1024 * 1024) + b"\n\n"

    async def example() -> str:
        sent = asyncio.Event()

        async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n" + big + b"data: after\n\n")
            await writer.drain()  # returns once the keeper has read it all: it did read on
            sent.set()
            await asyncio.Event().wait()  # the connection stays open

        server = await asyncio.start_server(upstream, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        store = MemoryHistory(HistoryLimits())
        keeper = Keeper(Resumer(store), KeepSettings(grace=0.5, max_event_bytes=64))
        keeper.start()

        async def read_on() -> None:  # the event after the big one is recorded: the stream went on without it
            while not any(e.raw == b"data: after\n\n" for e in store.events("s")):
                await asyncio.sleep(0.01)  # (polling a condition, under wait_for's deadline)

        try:
            request = UpstreamRequest("GET", f"http://127.0.0.1:{port}/sse", (("Accept", "text/event-stream"),))
            token = keeper.admit("s", request, None)
            assert token is not None
            report = keeper._reports[token]
            while keeper._server is None:
                await asyncio.sleep(0)
            _, writer = await asyncio.open_connection("127.0.0.1", keeper.port, limit=1024)
            cast(asyncio.Transport, writer.transport).pause_reading()  # a client that reads nothing
            writer.write(b"GET /sse HTTP/1.1\r\nHost: k\r\nx-sse-resume-keep: %s\r\n\r\n" % token.encode())
            await asyncio.wait_for(sent.wait(), 30)
            await asyncio.wait_for(read_on(), 30)  # (a TimeoutError fails the test)
            writer.transport.abort()
            return report.ended
        finally:
            await keeper.aclose()
            server.close()

    ended = asyncio.run(example())
    assert "took nothing for 0.5 s" in ended, ended


def test_a_kept_replay_goes_out_in_parts_within_the_budget_each_event_once_in_order() -> None:
    """A replay larger than the budget allows is sent part by part as the client reads: every event once, in
    order, and no more than the budget (plus one event) queued at any time."""
    from sse_resume_core._resume import ReplayBudget, Resumer
    from sse_resume_keep import Keeper, KeepSettings, UpstreamRequest

    events = [b"id: %d\ndata: %s\n\n" % (n, b"x" * 3000) for n in range(301)]  # ~900 KiB after id 0
    budget = ReplayBudget(per_replay=64 * 1024, in_flight=64 * 1024)

    async def example() -> tuple[bytes, int]:
        async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            await writer.drain()
            await asyncio.Event().wait()  # a live stream with nothing new

        server = await asyncio.start_server(upstream, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        store = MemoryHistory(HistoryLimits(max_bytes=1 << 30))
        stream = store.new_stream("s")
        for n, raw in enumerate(events):
            store.record("s", stream, str(n), raw)
        keeper = Keeper(Resumer(store, budget=budget), KeepSettings())
        keeper.start()
        peak = 0
        try:
            request = UpstreamRequest("GET", f"http://127.0.0.1:{port}/sse", (("Accept", "text/event-stream"),))
            token = keeper.admit("s", request, "0")
            assert token is not None
            while keeper._server is None:
                await asyncio.sleep(0)
            reader, writer = await asyncio.open_connection("127.0.0.1", keeper.port)
            writer.write(b"GET /sse HTTP/1.1\r\nHost: k\r\nx-sse-resume-keep: %s\r\n\r\n" % token.encode())
            body = b""
            for _ in range(10_000):  # bounded: a few hundred reads are enough
                if b"id: 300\n" in body:
                    break
                body += await asyncio.wait_for(reader.read(4096), 10)
                peak = max(peak, budget.held)
            writer.close()
            return body, peak
        finally:
            await keeper.aclose()
            server.close()

    body, peak = asyncio.run(example())
    ids = [int(m) for m in re.findall(rb"id: (\d+)\n", body)]
    assert ids == list(range(1, 301))
    assert 0 < peak <= 64 * 1024 + len(events[1])


# -- what is queued for all clients together (ClientQueues) ----------------------------------------------------------


class _Transport:
    def __init__(self) -> None:
        self.size = 0
        self.aborted = False

    def get_write_buffer_size(self) -> int:
        return self.size

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True


class _Writer:
    """A connection to mitmproxy that takes nothing: all written stays queued."""

    def __init__(self) -> None:
        self.transport = _Transport()
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written += data
        self.transport.size += len(data)


def _client(queues: object) -> tuple[object, _Writer]:
    import h11

    from sse_resume_keep._keeper import KeepReport, _Client

    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET /sse HTTP/1.1\r\nHost: k\r\n\r\n")
    while conn.next_event() is not h11.NEED_DATA and conn.their_state is not h11.DONE:
        pass
    conn.send(h11.Response(status_code=200, headers=[("transfer-encoding", "chunked")]))
    writer = _Writer()
    return _Client(conn, cast("asyncio.StreamWriter", writer), KeepReport(), cast("ClientQueues", queues)), writer


def test_each_client_may_queue_its_share_of_the_bound_for_all() -> None:
    from sse_resume_keep._keeper import SLOW_CLIENT, ClientQueues, KeepSettings

    async def shares() -> list[int]:
        queues = ClientQueues(KeepSettings(max_queued_bytes=32 << 20))  # (each at most 8 MiB: 8 max events)
        seen = []
        for n in range(1, 201):
            _client(queues)
            if n in (1, 4, 8, 100, 128, 200):
                seen.append(queues.share())
        return seen

    assert asyncio.run(shares()) == [8 << 20, 8 << 20, 4 << 20, (32 << 20) // 100, SLOW_CLIENT, SLOW_CLIENT]


def test_clients_past_their_share_when_others_come_are_ended_as_too_slow_or_dropped() -> None:
    """A response going on ends between events, with the comment; what is queued after a response that ended
    already is dropped with its connection. One in the middle of an oversize event is left to wait for."""
    from sse_resume_keep._keeper import TOO_SLOW, ClientQueues, KeepSettings, _Client

    async def example() -> None:
        queues = ClientQueues(KeepSettings(max_queued_bytes=6 << 20))
        a, wa = _client(queues)
        b, wb = _client(queues)
        assert isinstance(a, _Client) and isinstance(b, _Client)
        assert a.send(b"x" * (2 << 20)) and b.send(b"x" * ((2 << 20) - 64))  # (within a share of 3 MiB, framed)
        assert a.send(b"x" * (2 << 20))  # past it now, but it is checked before a write: the next one ends it
        assert not a.send(b"data: next\n\n") and a.closed
        assert wa.written.endswith(TOO_SLOW + b"\r\n0\r\n\r\n")  # (the comment, then the end of the chunks)
        big, wbig = _client(queues)  # share 2 MiB: b is within it; a, ended, holds more: dropped
        assert isinstance(big, _Client)
        assert wa.transport.aborted and not b.closed and not wb.transport.aborted
        big.big = True
        assert big.send(b"x" * (3 << 20))  # an oversize event under way: not ended for it
        _client(queues)  # share 1.5 MiB: b is past it, and ended; big is waited for (see KeptStream._hold_back)
        assert b.closed and wb.written.endswith(TOO_SLOW + b"\r\n0\r\n\r\n")
        assert not big.closed and not wbig.transport.aborted
        for c in list(queues.clients):
            queues.discard(c)
        assert queues.share() == 6 << 20

    asyncio.run(example())


def test_a_large_chunk_is_fed_in_pieces_and_the_other_tasks_run_between_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """A read of bytes already buffered does not yield: a chunk of many tiny events, parsed whole, held every other
    stream of the proxy. The keeper feeds it in pieces of FAIR_SHARE bytes and lets the loop run between them."""
    from sse_resume_core._keep import KeptFeed
    from sse_resume_core._resume import Resumer
    from sse_resume_keep import Keeper, KeepSettings, UpstreamRequest
    from sse_resume_keep._keeper import FAIR_SHARE

    body = b"data: x\n\n" * (16 * FAIR_SHARE // 9)
    pieces: list[int] = []
    feed = KeptFeed.feed

    def recorded(self: KeptFeed, chunk: bytes) -> object:
        pieces.append(len(chunk))
        return feed(self, chunk)

    monkeypatch.setattr(KeptFeed, "feed", recorded)

    async def example() -> list[int]:
        async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n" % len(body)
            writer.write(head + body)
            await writer.drain()
            await asyncio.Event().wait()

        server = await asyncio.start_server(upstream, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        keeper = Keeper(Resumer(MemoryHistory(HistoryLimits())), KeepSettings())
        keeper.start()
        seen: list[int] = []  # how many pieces were fed, each time another task ran

        async def other() -> None:
            while sum(pieces) < len(body):
                seen.append(len(pieces))
                await asyncio.sleep(0)

        try:
            request = UpstreamRequest("GET", f"http://127.0.0.1:{port}/sse", (("Accept", "text/event-stream"),))
            token = keeper.admit("s", request, None)
            assert token is not None
            while keeper._server is None:
                await asyncio.sleep(0)
            _, writer = await asyncio.open_connection("127.0.0.1", keeper.port)
            writer.write(b"GET /sse HTTP/1.1\r\nHost: k\r\nx-sse-resume-keep: %s\r\n\r\n" % token.encode())
            await asyncio.wait_for(other(), 30)
            writer.close()
            return seen
        finally:
            await keeper.aclose()
            server.close()

    seen = asyncio.run(example())
    assert sum(pieces) == len(body) and max(pieces) <= FAIR_SHARE
    # The other task ran while the body was being fed: between pieces, not only before the first and after the last.
    between = {n for n in seen if 0 < n < len(pieces)}
    assert len(between) >= len(pieces) // 2, (len(pieces), sorted(between))

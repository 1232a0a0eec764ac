"""Keep mode: the feed of a kept stream and the backoff between upstream tries (sans-I/O), and the keeper's
handling of header bytes (in process, on 127.0.0.1)."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_resume_core import HistoryLimits, MemoryHistory
from sse_resume_core._keep import PROXY_ID_PREFIX, Backoff, Delivery, KeptFeed, is_proxy_id


def feed_of(**kw: object) -> tuple[MemoryHistory, KeptFeed]:
    store = MemoryHistory(HistoryLimits())
    stream = store.new_stream("s")
    feed = KeptFeed(store, "s", stream, **kw)  # type: ignore[arg-type]
    feed.connected()
    return store, feed


def delivered(feed: KeptFeed, *chunks: bytes) -> bytes:
    return b"".join(d.raw for chunk in chunks for d in feed.feed(chunk))


# -- backoff -------------------------------------------------------------------------------------------------------


def test_backoff_doubles_from_one_second_up_to_thirty_for_ten_tries() -> None:
    b = Backoff()
    assert [b.delay(n, rand=lambda: 0.5) for n in range(1, 11)] == [1, 2, 4, 8, 16, 30, 30, 30, 30, 30]
    assert b.delay(11) is None and b.delay(0) is None


def test_backoff_jitter_is_ten_percent_either_way() -> None:
    b = Backoff()
    assert b.delay(1, rand=lambda: 0.0) == pytest.approx(0.9)
    assert b.delay(1, rand=lambda: 1.0) == pytest.approx(1.1)
    assert all(0.9 * 4 <= (b.delay(3) or 0) <= 1.1 * 4 for _ in range(200))


def test_backoff_base_is_the_upstreams_retry() -> None:
    b = Backoff(tries=3)
    assert [b.delay(n, 200, rand=lambda: 0.5) for n in (1, 2, 3, 4)] == [0.2, 0.4, 0.8, None]


# -- the feed ------------------------------------------------------------------------------------------------------


def test_events_are_recorded_once_and_delivered_in_order() -> None:
    store, feed = feed_of()
    out = delivered(feed, b"id: 1\ndata: a\n\nid: 2\nda", b"ta: b\n\n: ping\n\n")
    assert out == b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n: ping\n\n"
    assert [e.id for e in store.events("s")] == ["1", "2"]  # the comment is delivered, not recorded
    assert feed.upstream_id == "2"


def test_events_resent_after_a_reconnect_are_dropped() -> None:
    store, feed = feed_of()
    delivered(feed, b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n")
    feed.ended()
    feed.connected()  # an upstream that ignores Last-Event-ID starts again from 1
    out = delivered(feed, b"id: 1\ndata: a\n\nid: 2\ndata: b\n\nid: 3\ndata: c\n\n")
    assert out == b"id: 3\ndata: c\n\n"
    assert feed.stats.duplicates == 2 and len(store.events("s")) == 3


def test_an_unfinished_block_at_a_break_is_never_delivered() -> None:
    _, feed = feed_of()
    assert delivered(feed, b"id: 1\ndata: a\n\nid: 2\ndata: b") == b"id: 1\ndata: a\n\n"
    feed.ended()
    feed.connected()
    assert delivered(feed, b"id: 2\ndata: b\n\n") == b"id: 2\ndata: b\n\n"  # resent whole: delivered once
    assert feed.stats.discarded == 1


def test_assigned_ids_are_the_proxys_unique_and_never_the_upstream_id() -> None:
    store, feed = feed_of(assign_ids=True)
    out = delivered(feed, b"data: a\n\ndata: b\n\nid: 7\ndata: c\n\n")
    ids = [e.id for e in store.events("s")]
    assert ids[2] == "7" and is_proxy_id(ids[0]) and is_proxy_id(ids[1]) and ids[0] != ids[1]
    assert ids[0] is not None and ids[0].startswith(f"{PROXY_ID_PREFIX}{feed.stream}.")
    assert out.startswith(b"id: %s\ndata: a\n\n" % ids[0].encode())
    assert feed.upstream_id == "7" and feed.stats.assigned == 2
    delivered(feed, b"data: d\n\n")
    assert feed.upstream_id == "7"  # a proxy-made id is never what the upstream is asked to resume from


def test_without_assign_ids_events_keep_their_bytes() -> None:
    store, feed = feed_of()
    assert delivered(feed, b"data: a\n\n") == b"data: a\n\n"
    assert [e.id for e in store.events("s")] == [None]


def test_retry_and_id_reset_are_followed() -> None:
    _, feed = feed_of()
    delivered(feed, b"retry: 250\n\nid: 4\ndata: a\n\n")
    assert feed.retry == 250 and feed.upstream_id == "4"
    delivered(feed, b"id\ndata: b\n\n")  # an empty id: the upstream reset its ids
    assert feed.upstream_id is None


def test_oversize_events_pass_live_and_are_not_recorded() -> None:
    store, feed = feed_of(max_event_bytes=64)
    big = b"id: 9\ndata: " + b"x" * 200 + b"\n\n"
    assert delivered(feed, big, b"id: 10\ndata: ok\n\n") == big + b"id: 10\ndata: ok\n\n"
    assert [e.id for e in store.events("s")] == ["10"] and feed.stats.oversize >= 1


# -- oversize events: where they end -------------------------------------------------------------------------------


def _oversize_runs(deliveries: list[Delivery]) -> list[bytes]:
    """The oversize events in ``deliveries``, each rebuilt from its pieces (checking that ``more`` is set on
    every piece but the last of each event)."""
    events: list[bytes] = []
    current: list[bytes] | None = None
    for d in deliveries:
        if not d.oversize:
            assert current is None, "a block inside an unfinished oversize event"
            continue
        current = (current or []) + [d.raw]
        if not d.more:
            events.append(b"".join(current))
            current = None
    assert current is None
    return events


BIG = b"id: 5\ndata: " + b"y" * 300 + b"\ndata: " + b"z" * 300 + b"\n\n"


@pytest.mark.parametrize("step", [len(BIG) + 40, 64, 7, 1])
@pytest.mark.parametrize("ends", [b"\n\n", b"\r\n\r\n", b"\r\r"])
def test_an_oversize_event_says_where_it_ends_however_it_is_cut(step: int, ends: bytes) -> None:
    big = BIG[:-2] + ends
    stream = b"id: 4\ndata: a\n\n" + big + b"id: 6\ndata: b\n\n"
    store, feed = feed_of(max_event_bytes=64)
    out = [d for start in range(0, len(stream), step) for d in feed.feed(stream[start : start + step])]
    assert b"".join(d.raw for d in out) == stream  # every byte, once, in order
    assert _oversize_runs(out) == [big]
    assert not feed.open_oversize
    assert [e.id for e in store.events("s")] == ["4", "6"]


def test_an_oversize_event_is_open_until_its_end_and_a_new_connection_closes_it() -> None:
    _, feed = feed_of(max_event_bytes=64)
    (piece,) = feed.feed(BIG[:200])
    assert piece.oversize and piece.more and feed.open_oversize
    (piece,) = feed.feed(BIG[200:400])
    assert piece.more
    feed.ended()  # the upstream broke in the middle of it
    feed.connected()
    assert not feed.open_oversize
    assert [d.oversize for d in feed.feed(b"id: 9\ndata: c\n\n")] == [False]


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

    from sse_resume_core._resume import ResumeStats
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
        keeper = Keeper(MemoryHistory(HistoryLimits()), KeepSettings(), ResumeStats())
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


def test_a_client_that_takes_nothing_of_an_oversize_event_is_dropped_after_the_grace_time() -> None:
    """While an oversize event is under way the keeper waits for its clients; one that reads nothing at all is
    dropped after sse_keep_grace seconds, and the kept stream reads on."""
    from sse_resume_core._resume import ResumeStats
    from sse_resume_keep import Keeper, KeepSettings, UpstreamRequest

    big = b"data: " + b"x" * (16 * 1024 * 1024) + b"\n\n"

    async def example() -> tuple[str, bool]:
        sent = asyncio.Event()

        async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n" + big + b"data: after\n\n")
            await writer.drain()  # returns once the keeper has read it all: it did read on
            sent.set()
            await asyncio.Event().wait()  # the connection stays open

        server = await asyncio.start_server(upstream, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        keeper = Keeper(MemoryHistory(HistoryLimits()), KeepSettings(grace=0.5, max_event_bytes=64), ResumeStats())
        keeper.start()
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
            writer.transport.abort()
            return report.ended, any(keeper.streams)
        finally:
            await keeper.aclose()
            server.close()

    ended, still_kept = asyncio.run(example())
    assert "took nothing for 0.5 s" in ended, ended
    assert still_kept  # the stream went on without it

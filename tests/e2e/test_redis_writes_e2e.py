"""Writes to Redis over a slow link: large events, a burst, an outage, a lone event bigger than a batch.

Between the store and a real redis-server sits :class:`Link`, a TCP relay on 127.0.0.1 that passes at most
``rate`` bytes a second each way (as a modest network would) and can be cut and restored (an outage). The tests
count what landed in Redis through a client of their own that talks to the server directly, not through the link.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from httpx_sse import EventSource

from harness import Mitmdump, RedisServer, async_wait_for, free_port, scrape, wait_for, wait_port
from sse_resume_core import HistoryLimits
from sse_resume_redis import RedisHistory

KIB = 1024
S = "session-w"


class Link:
    """A TCP relay from a port of its own to ``target``, at most ``rate`` bytes/s each way, shared by all its
    connections (a link, not a per-connection limit). Runs its own event loop in a thread; stops when left, or by
    itself after ``lifetime`` seconds. What it holds is bounded: one read (``CHUNK``) per direction and connection,
    read again only once written on.
    """

    CHUNK = 16 * KIB

    def __init__(self, target: int, rate: float, lifetime: float = 300) -> None:
        self.target = target
        self.rate = rate
        self.lifetime = lifetime
        self.port = 0
        self.up = True
        self._free_at = [0.0, 0.0]  # per direction: when the link is next free to carry a byte
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),), daemon=True)

    def __enter__(self) -> Link:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the link did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cut(self) -> None:
        """An outage: open connections break, new ones are refused (closed at once), until :meth:`restore`."""
        self._call(self._cut)

    def restore(self) -> None:
        self._call(self._restore)

    def _call(self, fn: Callable[[], None]) -> None:
        async def run() -> None:
            fn()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def _cut(self) -> None:
        self.up = False
        for writer in list(self._writers):
            writer.transport.abort()

    def _restore(self) -> None:
        self.up = True

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.lifetime)
        finally:
            server.close()
            self._cut()
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if not self.up:
                return
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
            except OSError:
                return
            self._writers.add(up_writer)
            try:
                pumps = [
                    asyncio.ensure_future(self._pump(reader, up_writer, 0)),
                    asyncio.ensure_future(self._pump(up_reader, writer, 1)),
                ]
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)  # either side gone: both go
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
            finally:
                self._writers.discard(up_writer)
                up_writer.transport.abort()
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, direction: int) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):
            while chunk := await src.read(self.CHUNK):
                start = max(loop.time(), self._free_at[direction])
                self._free_at[direction] = start + len(chunk) / self.rate
                await asyncio.sleep(self._free_at[direction] - loop.time())  # pacing the link, not a wait for a state
                dst.write(chunk)
                await dst.drain()


def wait_until(what: str, condition: Callable[[], bool], timeout: float = 60) -> None:
    wait_for(condition, timeout, what, every=0.05)


async def await_until(what: str, condition: Callable[[], bool], timeout: float = 60) -> None:
    await async_wait_for(condition, timeout, what, every=0.05)


def events_in_redis(port: int, prefix: str = "sse-resume:") -> int:
    """Events held in Redis under ``prefix``, every session counted, asked of the server directly."""
    client = redis.Redis(port=port)
    try:
        return sum(client.zcard(key) for key in client.scan_iter(match=prefix + "v2:{*}:ev", count=1000))
    finally:
        client.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as s:
        yield s


@pytest.fixture
def prefix() -> str:
    return f"w-{uuid.uuid4().hex[:8]}:"


def big(n: int, size: int) -> bytes:
    head = f"id: {n}\ndata: ".encode()
    return head + b"x" * (size - len(head) - 2) + b"\n\n"


def drained(store: RedisHistory) -> bool:
    health = store.health()
    return health.up and not health.queued


# -- the store on its own --------------------------------------------------------------------------------------------


def test_a_burst_of_large_events_lands_over_a_12_mb_s_link(server: RedisServer, prefix: str) -> None:
    """100 events of 256 KiB at once (25 MiB): more than a batch's bytes, sent in batches that fit the time."""
    with Link(server.port, 12e6) as link:

        async def scenario() -> None:
            store = RedisHistory(link.url, HistoryLimits(max_events=1000), prefix=prefix)
            stream = store.new_stream(S)
            for n in range(1, 101):
                store.record(S, stream, str(n), big(n, 256 * KIB))
            await await_until("100 writes land", lambda: store.health().writes == 100)
            await await_until("the store is up with nothing queued", lambda: drained(store))
            await store.aclose()

        asyncio.run(scenario())
        assert events_in_redis(server.port, prefix) == 100


def test_after_an_outage_the_queue_drains_over_a_30_mb_s_link(server: RedisServer, prefix: str) -> None:
    """200 events of 256 KiB (50 MiB) wait while the link is down; once it is back they all land, and the store
    says it is up again by itself."""
    with Link(server.port, 30e6) as link:

        async def scenario() -> None:
            store = RedisHistory(link.url, HistoryLimits(max_events=1000), prefix=prefix)
            stream = store.new_stream(S)
            store.record(S, stream, "0", big(0, 100))
            await await_until("the first write lands", lambda: drained(store))
            link.cut()
            for n in range(1, 201):
                store.record(S, stream, str(n), big(n, 256 * KIB))
            await await_until("the store notices the outage", lambda: not store.health().up)
            link.restore()
            await await_until("every write lands", lambda: store.health().writes == 201, timeout=120)
            await await_until("the store is up with nothing queued", lambda: drained(store))
            assert store.health().dropped == 0
            await store.aclose()

        asyncio.run(scenario())
        assert events_in_redis(server.port, prefix) == 201


def test_an_event_bigger_than_a_batch_goes_alone_with_time_for_its_size(server: RedisServer, prefix: str) -> None:
    """A 4 MiB event over a 2 MB/s link takes about 2 s, more than a batch of ordinary size is given."""
    with Link(server.port, 2e6) as link:

        async def scenario() -> None:
            store = RedisHistory(link.url, prefix=prefix)
            stream = store.new_stream(S)
            store.record(S, stream, "1", big(1, 4 * KIB * KIB))
            store.record(S, stream, "2", big(2, 100))
            await await_until("both writes land", lambda: store.health().writes == 2)
            await await_until("the store is up with nothing queued", lambda: drained(store))
            await store.aclose()

        asyncio.run(scenario())
        assert events_in_redis(server.port, prefix) == 2


def test_after_a_timeout_the_same_writes_go_again_in_smaller_batches(server: RedisServer, prefix: str) -> None:
    """Over a 250 KB/s link a full batch (15 events of 64 KiB, 1 MiB) needs 4 s, more than its 3 s: it times out
    once, then the same writes go in batches half that size, which are in time."""
    with Link(server.port, 250e3) as link:

        async def scenario() -> None:
            store = RedisHistory(link.url, HistoryLimits(max_events=1000), prefix=prefix)
            stream = store.new_stream(S)
            for n in range(1, 25):
                store.record(S, stream, str(n), big(n, 64 * KIB))
            await await_until("a batch times out", lambda: store.health().failures >= 1)
            await await_until("every write lands", lambda: store.health().writes == 24)
            await await_until("the store is up with nothing queued", lambda: drained(store))
            await store.aclose()

        asyncio.run(scenario())
        assert events_in_redis(server.port, prefix) == 24


def test_writes_past_the_queue_bound_are_given_up_counted_and_logged_without_payload(
    server: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    payload = (b"secret-payload " * 70_000)[: KIB * KIB]  # the same object each time: the test holds it once
    with Link(server.port, 50e6) as link:

        async def scenario() -> None:
            store = RedisHistory(link.url, HistoryLimits(max_events=10), prefix=prefix)
            stream = store.new_stream(S)
            store.record(S, stream, "0", b"id: 0\n\n")
            await await_until("the first write lands", lambda: drained(store))
            link.cut()
            for n in range(1, 81):  # 80 MiB: past the 64 MiB the queue holds
                store.record(S, stream, str(n), payload)
            health = store.health()
            assert health.dropped >= 80 - 64 and health.queued <= 64
            link.restore()
            await await_until("the rest lands", lambda: drained(store), timeout=120)
            health = store.health()
            assert health.writes + health.dropped == 81
            await store.aclose()

        with caplog.at_level(logging.INFO, logger="sse_resume"):
            asyncio.run(scenario())
    log = caplog.text
    assert "given up" in log
    assert "secret-payload" not in log


# -- through a real mitmdump -----------------------------------------------------------------------------------------


def read_sse(url: str, count: int) -> list[str]:
    """The ids of the first ``count`` events at ``url``, decoded by httpx-sse."""
    ids: list[str] = []
    with httpx.Client(timeout=30) as client, client.stream("GET", url) as response:
        for sse in EventSource(response).iter_sse():
            ids.append(sse.id)
            if len(ids) >= count:
                break
    return ids


def store_metrics(port: int) -> dict[str, float]:
    return {k.removeprefix("sse_resume_store_"): v for k, v in scrape(port).items() if "_store_" in k}


def test_a_burst_through_the_proxy_lands_over_a_12_mb_s_link(
    tmp_path: Path, upstream_port: int, server: RedisServer
) -> None:
    before = events_in_redis(server.port)
    metrics = free_port()
    with Link(server.port, 12e6) as link:
        options = [f"sse_store={link.url}", "sse_store_secret=burst", f"sse_metrics_port={metrics}"]
        with Mitmdump(tmp_path, upstream_port, options) as proxy:
            wait_port(metrics)
            url = f"{proxy.url}/sse/burst?interval=0&pad={256 * KIB}&end_after=100"
            assert read_sse(url, 100) == [str(n) for n in range(1, 101)]
            wait_until("100 events in Redis", lambda: events_in_redis(server.port) - before == 100)
            wait_until("the store up with nothing queued", lambda: store_metrics(metrics)["queued"] == 0)
            values = store_metrics(metrics)
            assert values["up"] == 1 and values["writes_total"] == 100 and values["dropped_writes_total"] == 0
            log = proxy.output
    assert "Traceback" not in log


def test_after_an_outage_through_the_proxy_the_queue_drains_over_a_30_mb_s_link(
    tmp_path: Path, upstream_port: int, server: RedisServer
) -> None:
    before = events_in_redis(server.port)
    metrics = free_port()
    with Link(server.port, 30e6) as link:
        options = [f"sse_store={link.url}", "sse_store_secret=outage", f"sse_metrics_port={metrics}"]
        with Mitmdump(tmp_path, upstream_port, options) as proxy:
            wait_port(metrics)
            assert read_sse(f"{proxy.url}/sse/outage-first?end_after=1", 1) == ["1"]
            wait_until("the first write lands", lambda: store_metrics(metrics)["writes_total"] == 1)
            link.cut()
            url = f"{proxy.url}/sse/outage?interval=0&pad={256 * KIB}&end_after=200"
            assert read_sse(url, 200) == [str(n) for n in range(1, 201)]
            wait_until("the store notices the outage", lambda: store_metrics(metrics)["up"] == 0)
            link.restore()
            wait_until("201 events in Redis", lambda: events_in_redis(server.port) - before == 201, timeout=120)
            wait_until("the store back up by itself", lambda: store_metrics(metrics)["up"] == 1)
            values = store_metrics(metrics)
            assert values["queued"] == 0 and values["writes_total"] == 201 and values["dropped_writes_total"] == 0
            log = proxy.output
    assert "is available" in log and "Traceback" not in log

"""A client moves from one proxy to another, behind an upstream that ignores Last-Event-ID.

Two real mitmdumps share one real redis-server. The upstream numbers the events of every response from 1,
whatever Last-Event-ID says: a client that read 1, 2, 3 through proxy A and comes back to proxy B with
``Last-Event-ID: 3`` must get 4, 5, 6, ... and nothing twice. B can only recognise 1, 2 and 3 when the upstream
sends them again because adopting the stream from Redis copies all of it, not only what follows the id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from harness import EventSourceClient, Mitmdump, RedisServer, free_port, numbers, read_events

MAX_EVENTS = 2000  # events of a response, at most


class RestartingUpstream:
    """An SSE upstream on 127.0.0.1 that ignores Last-Event-ID: every response numbers its events from 1
    (``id: n``, ``data: {"n": n}``), one every ``interval`` seconds. When a path's query says ``first=N``, its first
    request (its first K with ``hold=K``) stops after N events, then sends nothing and stays open; the others go on
    (up to :data:`MAX_EVENTS`)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.port = free_port()
        self.requests: dict[str, list[str]] = {}  # path -> the Last-Event-ID of each request ("" when absent)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> RestartingUpstream:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the upstream did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.get_running_loop().create_task(self._respond(reader, writer))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        server = await asyncio.start_server(accept, "127.0.0.1", self.port)
        self._ready.set()
        await self._stop.wait()
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _respond(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            request_line, *lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            target = request_line.split(" ")[1]
            headers = {name.strip().lower(): value.strip() for name, _, value in (ln.partition(":") for ln in lines)}
            seen = self.requests.setdefault(target, [])
            seen.append(headers.get("last-event-id", ""))
            query = parse_qs(urlsplit(target).query)
            held = len(seen) <= int(query.get("hold", ["1"])[0])
            limit = int(query["first"][0]) if "first" in query and held else MAX_EVENTS
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            for number in range(1, limit + 1):
                event = f"id: {number}\ndata: {json.dumps({'n': number})}\n\n".encode()
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                await writer.drain()
                await asyncio.sleep(self.interval)  # the upstream's pace, not a wait for anything
            await self._stop.wait()  # silent, the connection open
        writer.close()


def written(proxy: Mitmdump, events: float) -> Callable[[], bool]:
    """The condition that ``proxy`` has written ``events`` events to Redis and has none left to write."""
    return lambda: (
        proxy.metric("sse_resume_store_writes_total") >= events and proxy.metric("sse_resume_store_queued") == 0
    )


Pair = tuple[Mitmdump, Mitmdump]
MODES = {"plain": (), "keep": ("sse_keep_upstream=true",)}


@pytest.fixture(scope="module")
def upstream() -> Iterator[RestartingUpstream]:
    with RestartingUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory, upstream: RestartingUpstream) -> Iterator[Callable[..., Pair]]:
    """Two proxies sharing one redis-server, made once per set of options (each test reads paths of its own)."""
    tmp = tmp_path_factory.mktemp("migration")
    made: dict[tuple[str, ...], Pair] = {}
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(RedisServer(tmp))

        def pair(*options: str) -> Pair:
            if options not in made:
                shared = [f"sse_store={redis.url}", "sse_store_secret=shared by both", *options]
                first = stack.enter_context(Mitmdump(tmp, upstream.port, shared, metrics=True))
                made[options] = first, stack.enter_context(Mitmdump(tmp, upstream.port, shared, metrics=True))
            return made[options]

        yield pair
    logs = [proxy.output for both in made.values() for proxy in both]  # (to their end: stopped)
    assert not [log for log in logs if "Traceback" in log or "unreadable history" in log]


def outcomes(client: EventSourceClient) -> list[str]:
    """The sse-resume header of each response, without keep mode's "; kept"."""
    return [outcome.split(";")[0] for outcome in client.outcomes]


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("first", [3, 6])
def test_a_client_moves_to_another_proxy_and_gets_every_event_once(
    pairs: Callable[..., Pair], upstream: RestartingUpstream, mode: str, first: int
) -> None:
    a, b = pairs(*MODES[mode])
    path = f"/sse/moves-{mode}-{first}?first={first}"
    before = a.metric("sse_resume_store_writes_total")
    # The client reads 1-3 through A, which has then recorded `first` events, all written to Redis.
    _, got = read_events(a.url + path, 3, until=written(a, before + first))
    assert [event_id for event_id, _ in got] == ["1", "2", "3"]
    client = EventSourceClient(b.url + path, last_event_id="3")
    events = client.run(8, timeout=30)
    assert numbers(events) == list(range(4, 12)), (client.outcomes, b.output)
    assert [event_id for event_id, _ in events] == [str(n) for n in range(4, 12)]
    if first == 3:  # A got what the client read: B goes upstream, and drops 1-3 when they come again
        assert outcomes(client) == ["up-to-date"]
    elif mode == "plain":  # A got 3 more: B serves them from Redis's copy, then goes upstream
        assert outcomes(client) == ["hit", "up-to-date"]
    else:  # the same, on one response: the replay, then the stream B reads
        assert outcomes(client) == ["hit"]
    assert upstream.requests[path][:2] == ["", str(first)]  # B asked the upstream to go on after the newest


@pytest.mark.parametrize("mode", list(MODES))
def test_past_the_bound_in_redis_what_it_no_longer_holds_is_not_recognised_elsewhere(
    pairs: Callable[..., Pair], mode: str
) -> None:
    """Redis holds ``sse_max_event_history`` events of a session, A remembers more: with a bound of 2, B adopts
    2 and 3 only, a stream missing its front. It answers 3 as up to date, and tells the client first that earlier
    events are no longer remembered; the upstream starts over, and 1, which nothing B holds names, would be recorded
    after 3: positions no longer follow the upstream's order, so B drops nothing by position. The client gets 1, 2
    and 3 again, as it was told, and nothing is lost (see docs/redis.md, "Limits")."""
    a, b = pairs("sse_max_event_history=2", *MODES[mode])
    path = f"/sse/bound-{mode}?first=3"
    read_events(a.url + path, 3, until=written(a, a.metric("sse_resume_store_writes_total") + 3))
    client = EventSourceClient(b.url + path, last_event_id="3")
    assert numbers(client.run(5, timeout=30)) == [1, 2, 3, 4, 5]
    assert outcomes(client) == ["up-to-date"]
    assert any(b"no longer remembered" in comment for comment in client.comments), client.comments


@pytest.mark.parametrize("mode", list(MODES))
def test_an_id_behind_the_bound_in_redis_is_a_miss_elsewhere(
    pairs: Callable[..., Pair], upstream: RestartingUpstream, mode: str
) -> None:
    """A got 6 events, Redis holds the last 2: B does not know 3, and says so (a miss, with its notice) instead of
    pretending to continue; the upstream's events pass as they come."""
    a, b = pairs("sse_max_event_history=2", *MODES[mode])
    path = f"/sse/behind-{mode}?first=6"
    read_events(a.url + path, 3, until=written(a, a.metric("sse_resume_store_writes_total") + 6))
    client = EventSourceClient(b.url + path, last_event_id="3")
    assert numbers(client.run(4, timeout=30)) == [1, 2, 3, 4]
    assert outcomes(client) == ["miss"]
    assert any(b"Last-Event-ID unknown" in comment for comment in client.comments), client.comments
    assert upstream.requests[path][1] == "3"  # forwarded as the client sent it


def test_clients_of_one_session_on_two_proxies_each_move_to_the_other(
    pairs: Callable[..., Pair], upstream: RestartingUpstream
) -> None:
    """Each proxy records the upstream's stream under a name of its own (neither knows the other's copy when its
    client starts): in Redis the same events are then in two copies, which still name one event each. (Plain
    mode: in keep mode the proxy a client moves to reads the stream already, and the client joins it there.)"""
    a, b = pairs()
    path = "/sse/two-clients?first=3&hold=2"
    for proxy in (a, b):
        before = proxy.metric("sse_resume_store_writes_total")
        _, got = read_events(proxy.url + path, 3, until=written(proxy, before + 3))
        assert [event_id for event_id, _ in got] == ["1", "2", "3"]
    for proxy in (b, a):
        client = EventSourceClient(proxy.url + path, last_event_id="3")
        assert numbers(client.run(5, timeout=30)) == [4, 5, 6, 7, 8]
        assert outcomes(client) == ["up-to-date"]
    assert upstream.requests[path] == ["", "", "3", "3"]

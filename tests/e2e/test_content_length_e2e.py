"""SSE responses framed by Content-Length (a finite stream, such as a buffered MCP POST answer), through a real
mitmdump: the addon puts bytes in front and drops duplicates, so the upstream's length must not reach the client.

Before, the client read exactly the upstream's length: events after it were left on the connection (lost, and
the connection out of step), and a response whose events were all dropped as duplicates hung the client.
The upstream is this file's own (asyncio, in a thread, on 127.0.0.1); it numbers each response's events from 1,
ignoring Last-Event-ID, as many real servers do. Clients: curl (which must end by itself) and httpx-sse.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
from httpx_sse import connect_sse

from harness import Mitmdump, curl

EVENTS = 5


def body() -> bytes:
    return b"".join(b'id: %d\ndata: {"n": %d}\n\n' % (n, n) for n in range(1, EVENTS + 1))


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while True:
            await reader.readuntil(b"\r\n\r\n")
            data = body()
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n%s"
                % (len(data), data)
            )
            await writer.drain()


@pytest.fixture(scope="module")
def upstream_with_length() -> Iterator[int]:
    loop = asyncio.new_event_loop()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    server = loop.run_until_complete(asyncio.start_server(_answer, sock=sock))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, upstream_with_length: int) -> Iterator[Mitmdump]:
    with Mitmdump(tmp_path_factory.mktemp("cl"), upstream_with_length) as p:
        yield p


def ids_of(url: str, headers: dict[str, str]) -> tuple[httpx.Response, list[str]]:
    with httpx.Client(timeout=30) as client, connect_sse(client, "GET", url, headers=headers) as source:
        return source.response, [e.id for e in source.iter_sse() if e.data]


def test_a_miss_gets_its_comment_and_every_event_and_ends(proxy: Mitmdump) -> None:
    out, ids = curl(f"{proxy.url}/a", "-H", "Last-Event-ID: ancient", max_time=30)
    assert ids == [str(n) for n in range(1, EVENTS + 1)], out
    assert out.startswith(": sse-resume: Last-Event-ID unknown")


def test_a_resume_on_a_restarting_upstream_drops_what_the_client_has_and_ends(proxy: Mitmdump) -> None:
    response, first = ids_of(f"{proxy.url}/b", {})
    assert first == ["1", "2", "3", "4", "5"]
    # The upstream starts at 1 again: every event is one the client has, dropped; the response must still end.
    response, again = ids_of(f"{proxy.url}/b", {"last-event-id": "5"})
    assert response.headers["sse-resume"] == "up-to-date" and again == []
    assert "content-length" not in response.headers


def test_an_inline_replay_and_the_rest_arrive_whole(proxy: Mitmdump) -> None:
    ids_of(f"{proxy.url}/c", {})  # 1..5 recorded
    out, ids = curl(f"{proxy.url}/c", "-H", "Last-Event-ID: 2", max_time=30)
    assert ids == ["3", "4", "5"], out  # 3..5 from history, then the upstream's 1..5, all of them duplicates

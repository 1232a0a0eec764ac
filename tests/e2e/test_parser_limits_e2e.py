"""The parser's limits through a real mitmdump, plain and keep mode: a ``retry`` of thousands of digits, a
``retry`` in a final block that never dispatches, a stream that starts with a byte order mark, and an internal
error of the parser. The upstream is a scripted server of this file on 127.0.0.1 (chunk by chunk, some sent only
once the client has what came before, so the proxy holds the start of a block when the next bytes come); the
client is httpx, with httpx-sse's decoder reading the bytes as a conforming client would.
"""

from __future__ import annotations

import codecs
import socketserver
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from httpx_sse._decoders import SSEDecoder, SSELineDecoder

from harness import ROOT, Mitmdump

BOM = b"\xef\xbb\xbf"
HUGE = b"9" * 5000  # more digits than Python's int() takes from a string (4,300)
MAX_RETRY = 2**31 - 1  # what the proxy counts such a retry as (docs/theory.md)
FAULT = ROOT / "tests" / "e2e" / "fault_addon.py"
WAIT = 20.0  # seconds any one condition is waited for

# One step of an upstream response: bytes are one chunk sent at once; an Event is waited for (a condition the
# test sets, such as "the client has the first event"), so the bytes after it come in a chunk of their own. After
# the last step the response ends; ending with Upstream.done keeps it open until the end of the test module.
Step = bytes | threading.Event


@dataclass
class Route:
    """What the upstream answers on one path: the n-th request gets ``responses[n]`` (the last one after that)."""

    responses: list[list[Step]]
    requests: list[dict[str, str]] = field(default_factory=list)  # the headers of each request, in order


class Upstream(socketserver.ThreadingTCPServer):
    """A scripted SSE server on 127.0.0.1: HTTP/1.1, one chunk of the chunked body per step."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, Route] = {}
        self.done = threading.Event()  # set at the end: held responses end
        self.port: int = self.server_address[1]

    def route(self, path: str, *responses: list[Step]) -> Route:
        self.routes[path] = route = Route(list(responses))
        return route


class _Handler(socketserver.StreamRequestHandler):
    server: Upstream

    def handle(self) -> None:
        line = self.rfile.readline(65536).decode("latin-1")
        headers: dict[str, str] = {}
        while (header := self.rfile.readline(65536).decode("latin-1").strip()) != "":
            name, _, value = header.partition(":")
            headers[name.strip().lower()] = value.strip()
        route = self.server.routes.get(line.split(" ")[1] if " " in line else "")
        if route is None:
            self.wfile.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            return
        route.requests.append(headers)
        steps = route.responses[min(len(route.requests), len(route.responses)) - 1]
        self.wfile.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        )
        try:
            for step in steps:
                if isinstance(step, threading.Event):
                    if not step.wait(None if step is self.server.done else WAIT):
                        return  # (the test fails on its own condition)
                else:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(step), step))
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the proxy hung up
            pass


@dataclass
class Event:
    id: str
    type: str
    data: str


class Client:
    """Reads one response with httpx: its raw bytes, and its events as a conforming client dispatches them.

    The decoding is httpx-sse's, after a BOM at the very start is stripped as the spec says (httpx-sse does not
    strip it); events without data are left out (httpx-sse dispatches those too, the spec does not).
    """

    def __init__(self) -> None:
        self.raw = b""
        self.events: list[Event] = []
        self.headers: dict[str, str] = {}

    def read(
        self,
        url: str,
        headers: dict[str, str] | None = None,
        until: Callable[[Client], bool] = lambda client: False,
        on_event: Callable[[Client], None] = lambda client: None,
    ) -> Client:
        text = codecs.getincrementaldecoder("utf-8")("replace")
        lines, decoder = SSELineDecoder(), SSEDecoder()
        started = False
        timeout = httpx.Timeout(5, read=WAIT)
        with (
            httpx.Client(timeout=timeout) as http,
            http.stream("GET", url, headers={"accept": "text/event-stream", **(headers or {})}) as response,
        ):
            self.headers = dict(response.headers)
            for chunk in response.iter_raw():
                self.raw += chunk
                decoded = text.decode(chunk)
                if not started and decoded:
                    started = True
                    decoded = decoded.removeprefix("\ufeff")
                for line in lines.decode(decoded) if decoded else []:
                    sse = decoder.decode(line)
                    if sse is not None and sse.data:
                        self.events.append(Event(sse.id, sse.event or "message", sse.data))
                        on_event(self)
                if until(self):
                    break
        return self

    @property
    def bom_at_most_first(self) -> bool:
        """The body holds no BOM, or one, its very first bytes: never one a client would read inside a field."""
        return self.raw.count(BOM) == (1 if self.raw.startswith(BOM) else 0)


def has(count: int) -> Callable[[Client], bool]:
    return lambda client: len(client.events) >= count


def signal_after(count: int, flag: threading.Event) -> Callable[[Client], None]:
    """Set ``flag`` once the client has ``count`` events: the upstream sends what comes next only then."""
    return lambda client: flag.set() if len(client.events) >= count else None


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.done.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[Mitmdump]:
    with Mitmdump(tmp_path_factory.mktemp("plain"), upstream.port) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def keep(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> Iterator[Mitmdump]:
    with Mitmdump(tmp_path_factory.mktemp("keep"), upstream.port, ["sse_keep_upstream=true"]) as proxy:
        yield proxy


def events(client: Client) -> list[tuple[str, str, str]]:
    return [(e.id, e.type, e.data) for e in client.events]


# -- a retry of 5,000 digits ------------------------------------------------------------------------------------


# Event 1 and the start of event 2; then a retry of 5,000 digits that ends event 2; then event 3.
HUGE_CHUNKS = [b"id: 1\ndata: a\n\nid: 2\nevent: x\ndata: hello\n", b"retry: " + HUGE + b"\n\n", b"id: 3\ndata: c\n\n"]


def huge_retry_route(upstream: Upstream, path: str, later: list[Step], hold: bool = False) -> threading.Event:
    """HUGE_CHUNKS, the second once the client has event 1 (set the Event returned), then the end, or the
    response stays open with ``hold``. A later request gets ``later``."""
    got_first = threading.Event()
    first: list[Step] = [HUGE_CHUNKS[0], got_first, *HUGE_CHUNKS[1:], *([upstream.done] if hold else [])]
    upstream.route(path, first, later)
    return got_first


def test_huge_retry_loses_nothing_and_is_restored_clamped(plain: Mitmdump, upstream: Upstream) -> None:
    got_first = huge_retry_route(upstream, "/huge", [b"id: 4\ndata: d\n\n"])
    client = Client().read(f"{plain.url}/huge", on_event=signal_after(1, got_first))
    assert client.raw == b"".join(HUGE_CHUNKS)  # the upstream's bytes, every one
    assert events(client) == [("1", "message", "a"), ("2", "x", "hello"), ("3", "message", "c")]
    # The proxy counts the retry as the longest it takes: what it restores after a replay.
    assert Client().read(f"{plain.url}/huge", {"last-event-id": "1"}).headers["sse-resume"] == "hit"
    back = Client().read(f"{plain.url}/huge", {"last-event-id": "3"})
    assert back.headers["sse-resume"] == "up-to-date"
    assert back.raw == b"retry: %d\n\nid: 4\ndata: d\n\n" % MAX_RETRY
    assert "internal error" not in plain.output


def test_huge_retry_in_keep_mode_reaches_the_client_without_reconnects(keep: Mitmdump, upstream: Upstream) -> None:
    # (a reconnect, as the proxy made before the fix, would get all of it again at once)
    got_first = huge_retry_route(upstream, "/huge-kept", [*HUGE_CHUNKS, upstream.done], hold=True)
    client = Client().read(f"{keep.url}/huge-kept", until=has(3), on_event=signal_after(1, got_first))
    assert events(client) == [("1", "message", "a"), ("2", "x", "hello"), ("3", "message", "c")]
    assert client.raw == b"".join(HUGE_CHUNKS)
    assert len(upstream.routes["/huge-kept"].requests) == 1  # one upstream connection: it never broke


# -- a retry in a final block that never dispatches -------------------------------------------------------------


def test_retry_of_the_final_undispatched_block_is_restored(plain: Mitmdump, upstream: Upstream) -> None:
    first = b"retry: 700\n\nid: 1\ndata: a\n\nid: 2\ndata: b\n\nretry: 7777\ndata: never dispatched"
    upstream.route("/final", [first], [b"id: 3\ndata: c\n\n"])
    client = Client().read(f"{plain.url}/final")
    assert client.raw == first and events(client) == [("1", "message", "a"), ("2", "message", "b")]
    # The client's reconnection time is now 7777 ms: the spec applies the retry line as it is read. After a replay
    # (which sets a short one), the proxy restores that, not the 700 before it nor its default.
    assert Client().read(f"{plain.url}/final", {"last-event-id": "1"}).headers["sse-resume"] == "hit"
    back = Client().read(f"{plain.url}/final", {"last-event-id": "2"})
    assert back.raw == b"retry: 7777\n\nid: 3\ndata: c\n\n"


def test_retry_of_the_final_undispatched_block_paces_keep_mode(keep: Mitmdump, upstream: Upstream) -> None:
    # The kept stream's first connection says 60 s, then 1 ms in a block cut by the end: the proxy tries again
    # after 1 ms (after 60 s, capped at 30, it would come long after the client's wait).
    upstream.route(
        "/final-kept",
        [b"retry: 60000\n\nid: 1\ndata: a\n\nretry: 1\ndata: never dispatched"],
        [b"id: 2\ndata: b\n\n", upstream.done],
    )
    client = Client().read(f"{keep.url}/final-kept", until=has(2))
    assert events(client) == [("1", "message", "a"), ("2", "message", "b")]
    requests = upstream.routes["/final-kept"].requests
    assert len(requests) == 2 and requests[1].get("last-event-id") == "1"


# -- a stream that starts with a BOM ----------------------------------------------------------------------------


def test_bom_never_lands_after_the_proxys_own_bytes(plain: Mitmdump, upstream: Upstream) -> None:
    # Each upstream response starts with a BOM, then an event whose first line is its type.
    def response(n: int) -> list[Step]:
        return [BOM + b"event: update\nid: %d\ndata: %d\n\n" % (n, n), b"event: update\nid: %d\ndata: x\n\n" % (n + 1)]

    upstream.route("/bom", response(1), response(3), response(5))
    fresh = Client().read(f"{plain.url}/bom")
    assert fresh.raw.startswith(BOM) and fresh.bom_at_most_first  # untouched
    assert events(fresh) == [("1", "update", "1"), ("2", "update", "x")]
    # A miss: the proxy's comment goes first.
    miss = Client().read(f"{plain.url}/bom", {"last-event-id": "unknown"})
    assert miss.headers["sse-resume"] == "miss" and b": sse-resume:" in miss.raw
    assert miss.bom_at_most_first, miss.raw[:80]
    assert events(miss) == [("3", "update", "3"), ("4", "update", "x")]
    # A replay, then the restored retry in front of the upstream's next response (the same stream goes on).
    assert Client().read(f"{plain.url}/bom", {"last-event-id": "3"}).headers["sse-resume"] == "hit"
    back = Client().read(f"{plain.url}/bom", {"last-event-id": "4"})
    assert back.headers["sse-resume"] == "up-to-date" and b"retry: 3000\n\n" in back.raw
    assert back.bom_at_most_first, back.raw[:80]
    assert events(back) == [("5", "update", "5"), ("6", "update", "x")]
    # The history holds no BOM: a replay across those responses has none either.
    replay = Client().read(f"{plain.url}/bom", {"last-event-id": "3"})
    assert replay.headers["sse-resume"] == "hit" and BOM not in replay.raw
    assert events(replay) == [("4", "update", "x"), ("5", "update", "5"), ("6", "update", "x")]


def test_bom_in_keep_mode_after_a_comment_and_an_upstream_reconnect(keep: Mitmdump, upstream: Upstream) -> None:
    upstream.route(
        "/bom-kept",
        [BOM + b"event: update\nid: 1\ndata: a\n\nretry: 10\n\n"],  # then the end: the proxy reconnects
        [BOM + b"event: update\nid: 2\ndata: b\n\n", upstream.done],
    )
    client = Client().read(f"{keep.url}/bom-kept", {"last-event-id": "unknown"}, until=has(2))
    assert client.headers["sse-resume"] == "miss; kept" and client.raw.startswith(b": sse-resume:")
    assert client.bom_at_most_first, client.raw
    assert events(client) == [("1", "update", "a"), ("2", "update", "b")]


# -- an internal error of the parser ----------------------------------------------------------------------------


def test_parser_error_hands_on_every_byte_it_held(tmp_path: Path, upstream: Upstream) -> None:
    # The parser raises on the first block it reads line by line (event 2: its comment line takes it off the
    # usual shape), once it holds that block's start: the proxy passes the rest through, the start first.
    got_first = threading.Event()
    chunks = [b"id: 1\ndata: a\n\nid: 2\n: note\nevent: x\ndata: hel", b"lo\n\n", b"id: 3\ndata: c\n\n"]
    upstream.route("/fault", [chunks[0], got_first, *chunks[1:]])
    with Mitmdump(tmp_path, upstream.port, ["fault_parse_at=1"], extra=["-s", str(FAULT)]) as proxy:
        client = Client().read(f"{proxy.url}/fault", on_event=signal_after(1, got_first))
        log = proxy.output
    assert client.raw == b"".join(chunks)
    assert events(client) == [("1", "message", "a"), ("2", "x", "hello"), ("3", "message", "c")]
    assert log.count("internal error relaying") == 1 and "forced fault in the parser" in log

"""The keeper's HTTP/1.1 client (sse_resume_keep._upstream), against upstreams of the test's own on loopback
sockets: what goes out, how the body comes back, and what its errors say (never the upstream's bytes)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import h11
import pytest

from sse_resume_keep._upstream import Upstream, UpstreamError, broken, open_upstream, wire


def test_h11_errors_are_described_without_the_upstreams_bytes() -> None:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(b"HTTP/1.1 200 OK\r\nSECRET-TOKEN\r\n\r\n")
    try:
        conn.next_event()
    except h11.RemoteProtocolError as e:
        text = broken(e, 33)
    assert text.startswith("illegal header line after 33 bytes") and "SECRET" not in text


Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)


async def exchange(
    serve: Serve,
    method: str = "GET",
    path: str = "/sse",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> tuple[Upstream | UpstreamError, list[bytes]]:
    """One request to ``serve`` on a loopback port: the Upstream (or the error opening it raised) and the pieces
    of its body as they came (up to the error the body raised, which is then the first value)."""
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pieces: list[bytes] = []
    try:
        async with server:
            try:
                upstream = await open_upstream(method, f"http://127.0.0.1:{port}{path}", headers or [], body, None)
            except UpstreamError as e:
                return e, pieces
            try:
                async for piece in upstream.body():
                    pieces.append(piece)
            except UpstreamError as e:
                upstream.close()
                return e, pieces
            upstream.close()
            return upstream, pieces
    finally:
        server.close()


def test_the_request_goes_out_as_the_client_sent_it_with_a_host_and_a_length() -> None:
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        seen.append(head + await reader.readexactly(5))
        writer.write(b"HTTP/1.1 201 Made\r\nX-Thing: a\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    # mitmproxy's text for the client's bytes b"caf\xe9" (not UTF-8): sent upstream as those bytes
    odd = b"caf\xe9".decode("utf-8", "surrogateescape")
    result, pieces = asyncio.run(
        exchange(serve, "POST", "/p?q=1", [("X-Odd", odd), ("Transfer-Encoding", "chunked")], b"hello")
    )
    assert isinstance(result, Upstream) and pieces == []
    assert (result.status, result.reason, result.header("x-thing"), result.header("absent")) == (201, b"Made", "a", "")
    request = seen[0]
    assert request.startswith(b"POST /p?q=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nX-Odd: caf\xe9\r\n" in request and b"Content-Length: 5\r\n" in request
    assert b"chunked" not in request.lower() and request.endswith(b"\r\n\r\nhello")


def test_an_early_hint_is_skipped_and_the_body_comes_in_the_pieces_the_socket_brought() -> None:
    async def scenario() -> tuple[list[bytes], bytes, int]:
        done = asyncio.Event()

        async def serve_then_end(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_head(reader)
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b"6\r\ndata: \r\n2\r\n1\n\r\n")  # two chunks in one write: one piece
            await writer.drain()
            await asyncio.wait_for(done.wait(), 10)  # the rest once the client has had the first piece
            writer.write(b"1\r\n\n\r\n0\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve_then_end, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            upstream = await open_upstream("GET", f"http://127.0.0.1:{port}/sse", [], b"", None)
            pieces: list[bytes] = []
            async for piece in upstream.body():
                pieces.append(piece)
                done.set()  # the first piece came before the rest was sent
            upstream.close()
            server.close()
            return pieces, upstream.header("content-type").encode(), upstream.status

    pieces, content_type, status = asyncio.run(scenario())
    assert status == 200 and content_type == b"text/event-stream"
    assert pieces[0] == b"data: 1\n" and b"".join(pieces) == b"data: 1\n\n"


def test_a_body_that_breaks_hands_on_what_came_whole_then_raises_without_its_bytes() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nid: 1\r\nSECRET-NOT-A-SIZE\r\n")
        await writer.drain()
        writer.close()

    error, pieces = asyncio.run(exchange(serve))
    assert isinstance(error, UpstreamError) and b"".join(pieces) == b"id: 1"
    assert str(error).startswith("broken response: illegal chunk header after ") and "SECRET" not in str(error)


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b"", "connection closed before a response"),
        (b"NOT HTTP SECRET\r\n\r\n", "no response: illegal status line after "),
    ],
    ids=["closed", "not-http"],
)
def test_no_response_is_an_upstream_error_that_quotes_nothing(reply: bytes, message: str) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(reply)
        await writer.drain()
        writer.close()

    error, _ = asyncio.run(exchange(serve))
    assert isinstance(error, UpstreamError) and str(error).startswith(message) and "SECRET" not in str(error)


@pytest.mark.parametrize(
    ("url", "message"),
    [("ftp://127.0.0.1/x", "cannot fetch ftp:// URLs"), ("http:///x", "cannot fetch http:// URLs")],
)
def test_urls_it_cannot_fetch_are_refused_before_connecting(url: str, message: str) -> None:
    with pytest.raises(UpstreamError, match=message):
        asyncio.run(open_upstream("GET", url, [], b"", None))


def test_a_port_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(UpstreamError, match="the URL's port is not a number"):
        asyncio.run(open_upstream("GET", "http://127.0.0.1:eighty/x", [], b"", None))


def test_wire_gives_back_the_bytes_mitmproxy_decoded() -> None:
    raw = b"\xff\xfe caf\xc3\xa9"
    assert wire(raw.decode("utf-8", "surrogateescape")) == raw

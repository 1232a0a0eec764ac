"""The benchmarks' event shapes (benchmarks/event_shapes.py) are the streams they mean to be.

Each shape is decoded with httpx-sse (never the addon's parser), chunk by chunk as the fast upstream frames it,
and must give exactly the events intended, each HTTP chunk completing its own events; so a benchmark cannot
silently measure a malformed stream. The sse-starlette shape is checked against the real packages: the MCP
Python SDK's event dict for a JSON-RPC notification, encoded by sse-starlette as ``EventSourceResponse`` does.
"""

from __future__ import annotations

import codecs
import json
import re

import fast_upstream
import pytest
from event_shapes import MANY, SHAPES, Event, Shape
from httpx_sse._decoders import SSEDecoder, SSELineDecoder
from mcp.server.streamable_http import EventMessage, StreamableHTTPServerTransport
from mcp.types import JSONRPCNotification
from sse_starlette.event import ensure_bytes
from sse_starlette.sse import EventSourceResponse

COUNT = 2 * MANY + 3  # (the many shape's last chunk is a short one)
SIZE = 200
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"  # a version-4 UUID


class HttpxSSE:
    """httpx-sse's decoding as its ``EventSource.iter_sse`` does it: incremental UTF-8, lines, events."""

    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")("strict")  # (strict: a shape must be valid UTF-8)
        self._lines = SSELineDecoder()
        self._events = SSEDecoder()

    def feed(self, chunk: bytes) -> list[tuple[str, str, str]]:
        """(id, type, data) of each event the chunk completes; the id is the last event id, "" before any."""
        out = []
        for line in self._lines.decode(self._text.decode(chunk)):
            sse = self._events.decode(line.rstrip("\n"))
            if sse is not None:
                out.append((sse.id, sse.event, sse.data))
        return out


def expected(events: list[Event]) -> list[tuple[str, str, str]]:
    last = ""
    out = []
    for event in events:
        last = event.id if event.id is not None else last
        out.append((last, event.type, event.data))
    return out


def http_chunks(body: bytes) -> list[bytes]:
    """The chunks of an HTTP/1.1 chunked body, which must end with the last chunk and nothing after it."""
    chunks: list[bytes] = []
    pos = 0
    for _ in range(len(body)):  # (each pass consumes at least the five bytes of a chunk's framing)
        head_end = body.index(b"\r\n", pos)
        length = int(body[pos:head_end], 16)
        start = head_end + 2
        assert body[start + length : start + length + 2] == b"\r\n"
        if length == 0:
            assert start + 2 == len(body)
            return chunks
        chunks.append(body[start : start + length])
        pos = start + length + 2
    raise AssertionError("no last chunk")


@pytest.mark.parametrize("shape", SHAPES.values(), ids=list(SHAPES))
def test_shape_decodes_with_httpx_sse_into_the_events_intended(shape: Shape) -> None:
    chunks = http_chunks(fast_upstream.body(shape.name, COUNT, SIZE))
    assert chunks == shape.chunks(COUNT, SIZE)
    events = shape.events(COUNT, SIZE)
    assert len(chunks) == -(-COUNT // shape.per_chunk)
    decoder = HttpxSSE()
    for i, chunk in enumerate(chunks):  # each chunk completes its own events, and nothing is left over
        mine = events[i * shape.per_chunk : (i + 1) * shape.per_chunk]
        assert decoder.feed(chunk) == expected(events)[i * shape.per_chunk : i * shape.per_chunk + len(mine)]
        assert chunk.count(shape.terminator) == len(mine)  # what the benchmark's client counts
    assert all(len(shape.make(n, SIZE)[1]) in range(SIZE, SIZE + 20) for n in (1, COUNT))  # about 200 bytes
    assert len({event.data for event in events}) == COUNT  # every event its own


@pytest.mark.parametrize("shape", SHAPES.values(), ids=list(SHAPES))
def test_shape_decodes_the_same_in_pieces_of_any_size(shape: Shape) -> None:
    stream = b"".join(shape.chunks(COUNT, SIZE))
    for piece in (1, 7, 4096):
        decoder = HttpxSSE()
        got = [e for i in range(0, len(stream), piece) for e in decoder.feed(stream[i : i + piece])]
        assert got == expected(shape.events(COUNT, SIZE))


def test_starlette_shape_is_what_the_mcp_python_sdk_sends_through_sse_starlette() -> None:
    transport = StreamableHTTPServerTransport(mcp_session_id=None)
    sep = EventSourceResponse(content=iter(())).sep  # the separator sse-starlette writes by default
    assert sep == "\r\n"
    for n in (1, 2, COUNT):
        event, raw = SHAPES["starlette"].make(n, SIZE)
        assert event.id is not None and re.fullmatch(UUID, event.id)  # (as the SDK's example event store's)
        message = JSONRPCNotification.model_validate(json.loads(event.data))
        event_dict = transport._create_event_data(EventMessage(message, event.id))  # the SDK's own
        assert ensure_bytes(event_dict, sep) == raw  # as EventSourceResponse encodes it, field order included
        assert message.model_dump_json(by_alias=True, exclude_unset=True) == event.data


def test_typescript_shape_has_the_typescript_sdk_field_order_and_ids() -> None:
    for n in (1, COUNT):
        event, raw = SHAPES["typescript"].make(n, SIZE)
        lines = raw.split(b"\n")
        assert [line.split(b":", 1)[0] for line in lines] == [b"event", b"id", b"data", b"", b""]
        assert event.id is not None
        # ${streamId}_${Date.now()}_${Math.random().toString(36).substring(2, 10)}, the stream id a UUID
        assert re.fullmatch(UUID + r"_\d{13}_[0-9a-z]{8}", event.id)
        json.loads(event.data)

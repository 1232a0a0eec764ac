"""The event shapes the benchmarks send: what real servers put on the wire, each event about ``size`` bytes.

Each shape makes event ``n`` (1, 2, ...) as the fields a client should read from it (:class:`Event`) and the
bytes that carry them. ``per_chunk`` events go in one HTTP chunk (1: each event its own chunk, as the servers
below write them). ``tests/unit/benchmarks/test_event_shapes.py`` decodes every shape with httpx-sse and checks that it
reads the intended events, and that the sse-starlette shape is byte for byte what sse-starlette encodes.

Where the shapes come from:

- ``starlette``: the MCP Python SDK (mcp 2.3) through sse-starlette (3.x). ``mcp.server.streamable_http`` makes
  each message the dict ``{"event": "message", "data": message.model_dump_json(by_alias=True,
  exclude_unset=True), "id": event_id}`` and hands it to ``EventSourceResponse``, which encodes it with
  ``sse_starlette.event.ensure_bytes(data, sep="\\r\\n")``: the fields in the order id, event, data (retry would
  come last), CRLF line ends, one event per write (one HTTP chunk). Ids come from the server's ``EventStore``; the
  SDK's example store uses ``uuid4()``. A real capture from tests/e2e/mcp_server.py looks the same.
- ``typescript``: the MCP TypeScript SDK's ``writeSSEEvent``: ``event: message\\n``, then ``id: X\\n`` when the
  event has an id, then ``data: JSON.stringify(message)\\n\\n``. Ids of its example ``InMemoryEventStore``:
  ``${streamId}_${Date.now()}_${8 base-36 characters}``, the stream id a random UUID.
- ``data-only``: LLM token streams (OpenAI-style ``chat.completion.chunk`` objects): ``data: {json}\\n\\n``, no id,
  no event type.
- ``id-data``, ``id-event-data``: the plain LF shapes of small servers, browsers' test servers and most examples.
- ``multiline``: pretty-printed JSON, one ``data:`` line per line of it (the client joins them with LF).
- ``many``: ``id-event-data`` events, :data:`MANY` to an HTTP chunk (an upstream that writes in batches, or a
  buffering layer in front of it).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

MANY: Final = 16
"""Events per HTTP chunk of the ``many`` shape."""


@dataclass(frozen=True, slots=True)
class Event:
    """What a client reads from one event: its id field (None: it has none), its type, its data."""

    id: str | None
    type: str
    data: str


@dataclass(frozen=True, slots=True)
class Shape:
    name: str
    make: Callable[[int, int], tuple[Event, bytes]]
    """Event ``n`` of about ``size`` bytes: its fields, and its bytes on the wire."""
    terminator: bytes = b"\n\n"
    """What ends an event in this shape (and occurs nowhere else in it): the benchmark client counts these."""
    per_chunk: int = 1

    def chunks(self, count: int, size: int) -> list[bytes]:
        """The ``count`` first events, as the HTTP chunks the upstream writes."""
        raw = [self.make(n, size)[1] for n in range(1, count + 1)]
        return [b"".join(raw[i : i + self.per_chunk]) for i in range(0, count, self.per_chunk)]

    def events(self, count: int, size: int) -> list[Event]:
        """The ``count`` first events, as a client should read them."""
        return [self.make(n, size)[0] for n in range(1, count + 1)]


def _fit(build: Callable[[str], tuple[Event, bytes]], size: int) -> tuple[Event, bytes]:
    """``build(pad)`` with the pad (ASCII letters in a JSON string) long enough to make about ``size`` bytes."""
    short = build("")
    return build("x" * max(0, size - len(short[1])))


def _uuid(n: int, salt: bytes = b"") -> str:
    """A version-4 UUID, the same for the same ``n`` each run (the benchmarks compare runs)."""
    return str(uuid.UUID(bytes=hashlib.md5(salt + n.to_bytes(8, "big")).digest(), version=4))


def _progress(n: int, pad: str) -> str:
    """A JSON-RPC progress notification, compact, keys in the order pydantic's ``model_dump_json`` and
    ``JSON.stringify`` write them for the SDKs (formatted directly: ``json.dumps`` made preparing a round slow)."""
    return (
        '{"jsonrpc":"2.0","method":"notifications/progress","params":'
        f'{{"progressToken":1,"progress":{n},"total":1000000,"message":"step {n} {pad}"}}}}'
    )


def _id_data(n: int, size: int) -> tuple[Event, bytes]:
    def build(pad: str) -> tuple[Event, bytes]:
        data = _progress(n, pad)
        return Event(str(n), "message", data), f"id: {n}\ndata: {data}\n\n".encode()

    return _fit(build, size)


def _id_event_data(n: int, size: int) -> tuple[Event, bytes]:
    def build(pad: str) -> tuple[Event, bytes]:
        data = _progress(n, pad)
        return Event(str(n), "update", data), f"id: {n}\nevent: update\ndata: {data}\n\n".encode()

    return _fit(build, size)


def _starlette(n: int, size: int) -> tuple[Event, bytes]:
    event_id = _uuid(n)

    def build(pad: str) -> tuple[Event, bytes]:
        data = _progress(n, pad)
        return Event(event_id, "message", data), f"id: {event_id}\r\nevent: message\r\ndata: {data}\r\n\r\n".encode()

    return _fit(build, size)


def _typescript(n: int, size: int) -> tuple[Event, bytes]:
    stream_id = _uuid(0, b"stream")
    digits = int.from_bytes(hashlib.md5(n.to_bytes(8, "big")).digest()[:6], "big")
    random36 = ""
    for _ in range(8):
        digits, digit = divmod(digits, 36)
        random36 += "0123456789abcdefghijklmnopqrstuvwxyz"[digit]
    event_id = f"{stream_id}_{1_767_225_600_000 + n}_{random36}"

    def build(pad: str) -> tuple[Event, bytes]:
        data = _progress(n, pad)
        return Event(event_id, "message", data), f"event: message\nid: {event_id}\ndata: {data}\n\n".encode()

    return _fit(build, size)


def _multiline(n: int, size: int) -> tuple[Event, bytes]:
    def build(pad: str) -> tuple[Event, bytes]:
        data = json.dumps({"n": n, "kind": "update", "status": "running", "note": pad}, indent=1)
        lines = "".join(f"data: {line}\n" for line in data.split("\n"))
        return Event(str(n), "message", data), f"id: {n}\n{lines}\n".encode()

    return _fit(build, size)


def _data_only(n: int, size: int) -> tuple[Event, bytes]:
    def build(pad: str) -> tuple[Event, bytes]:
        chunk = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1_767_225_600,
            "model": "model",
            "choices": [{"index": 0, "delta": {"content": f" token{n}{pad}"}, "finish_reason": None}],
        }
        data = json.dumps(chunk, separators=(",", ":"))
        return Event(None, "message", data), f"data: {data}\n\n".encode()

    return _fit(build, size)


SHAPES: Final = {
    shape.name: shape
    for shape in (
        Shape("id-data", _id_data),
        Shape("id-event-data", _id_event_data),
        Shape("starlette", _starlette, terminator=b"\r\n\r\n"),
        Shape("typescript", _typescript),
        Shape("multiline", _multiline),
        Shape("data-only", _data_only),
        Shape("many", _id_event_data, per_chunk=MANY),
    )
}
"""Every shape, by name, in the order the benchmarks run them."""

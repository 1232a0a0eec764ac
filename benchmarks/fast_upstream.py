"""An SSE upstream that costs next to nothing: ``GET /sse?n=N&size=S&shape=NAME`` writes N events of about S
bytes in one of the shapes of ``event_shapes.py`` (``id-data`` by default), each its own HTTP chunk unless the
shape puts several in one, prepared once and written in one go, then ends the response. Used by the relay
benchmarks, which ask for each body once directly (so that preparing it is never part of a measured round)."""

from __future__ import annotations

import argparse
import asyncio
import functools
from urllib.parse import parse_qs, urlsplit

from event_shapes import SHAPES


@functools.cache
def body(shape: str, n: int, size: int) -> bytes:
    """The response body, in HTTP/1.1 chunked framing: the events of ``shape``, then the last chunk."""
    parts = [b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in SHAPES[shape].chunks(n, size)]
    parts.append(b"0\r\n\r\n")
    return b"".join(parts)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1].decode()
            q = parse_qs(urlsplit(target).query)
            n, size = int(q.get("n", ["1000"])[0]), int(q.get("size", ["200"])[0])
            shape = q.get("shape", ["id-data"])[0]
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" + body(shape, n, size)
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))

"""An SSE upstream that costs next to nothing: ``GET /sse?n=N&size=S`` writes N events of about S bytes, each its
own HTTP chunk, prepared once and written in one go, then ends the response. Used by the relay benchmarks."""

from __future__ import annotations

import argparse
import asyncio
import functools
from urllib.parse import parse_qs, urlsplit


@functools.cache
def body(n: int, size: int) -> bytes:
    parts = []
    for i in range(1, n + 1):
        head = f"id: {i}\ndata: ".encode()
        event = head + b"x" * max(1, size - len(head) - 2) + b"\n\n"
        parts.append(b"%x\r\n%s\r\n" % (len(event), event))
    parts.append(b"0\r\n\r\n")
    return b"".join(parts)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1].decode()
            q = parse_qs(urlsplit(target).query)
            n, size = int(q.get("n", ["1000"])[0]), int(q.get("size", ["200"])[0])
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" + body(n, size)
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

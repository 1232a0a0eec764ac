"""A small SSE server to put behind the proxy: numbered events, and the misbehaviours a proxy must survive.

    python recipes/demo_upstream.py [--port 8081] [--interval 0.3]

``GET /sse`` (and any path under it) streams ``id: 1``, ``id: 2``, ... a few per second, each with a line of
JSON data. The query string picks the behaviour, so one server plays every upstream the tests need:

    interval=S     seconds between events (default from --interval)
    resume=0       ignore Last-Event-ID and start again from 1 (default 1: continue after it)
    drop_after=N   cut the connection abruptly after N events (no chunked terminator)
    end_after=N    end the response cleanly after N events
    hang_after=N   after N events on a connection, send nothing more (a silent upstream)
    silent=S       send headers, then wait S seconds before the first event
    retry=MS       start the stream with "retry: MS"
    ids=0          send events without ids
    pad=N          add N bytes of padding to each event's data
    crlf=1         end lines with CRLF instead of LF
    count=N        stop numbering at N: after it, only comments (": idle") every interval
    split=S        send each event in two pieces, S seconds apart (a client can be cut mid-event)
    trickle=1      send every event one byte per write (a slow, hostile upstream)
    endless=N      first send N bytes of one line that never ends (no newline), then the events
    gzip=1         compress the stream (Content-Encoding: gzip), flushed after every event
    garbage_after=N  after N events on a connection, break the HTTP framing (a bad chunk size), then hang

Any other path answers 404, except ``/`` and ``/page``, which serve the EventSource page in
``recipes/eventsource.html``. Standard library only, so it runs anywhere Python does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import ssl
import zlib
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("demo_upstream")
PAGE = Path(__file__).with_name("eventsource.html")


class Upstream:
    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.requests: list[dict[str, str]] = []  # headers of each /sse request, newest last
        self.writers: set[asyncio.StreamWriter] = set()  # open connections
        self.stopping = False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            if not self.stopping:
                raise  # shutting down, a handler's end is nobody's error
        finally:
            self.writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:  # keep-alive: one request after another on this connection
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            _method, target, _ = request_line.split(" ", 2)
            headers = {}
            for line in header_lines:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0") or 0)
            if length:
                await reader.readexactly(length)
            url = urlsplit(target)
            if url.path == "/sse" or url.path.startswith("/sse/"):
                self.requests.append(headers)
                if not await self._stream(writer, headers, parse_qs(url.query)):
                    return
                continue  # a stream that ended cleanly leaves the connection open for the next request
            if url.path in ("/", "/page"):
                body = PAGE.read_bytes()
                await self._respond(writer, 200, "text/html; charset=utf-8", body)
            elif url.path == "/requests":
                body = json.dumps(self.requests).encode()
                await self._respond(writer, 200, "application/json", body)
            else:
                await self._respond(writer, 404, "text/plain", b"not found\n")

    @staticmethod
    async def _respond(writer: asyncio.StreamWriter, status: int, ctype: str, body: bytes) -> None:
        reason = {200: "OK", 404: "Not Found"}[status]
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()

    async def _stream(self, writer: asyncio.StreamWriter, headers: dict[str, str], q: dict[str, list[str]]) -> bool:
        """Stream events; say whether the response ended cleanly (the connection can serve another request)."""

        def opt(name: str, default: float) -> float:
            return float(q[name][0]) if name in q else default

        interval = opt("interval", self.interval)
        drop_after = int(opt("drop_after", 0))
        end_after = int(opt("end_after", 0))
        hang_after = int(opt("hang_after", 0))
        count = int(opt("count", 0))
        pad = "x" * int(opt("pad", 0))
        eol = "\r\n" if opt("crlf", 0) else "\n"
        with_ids = bool(opt("ids", 1))
        split = opt("split", 0)
        trickle = bool(opt("trickle", 0))
        endless = int(opt("endless", 0))
        garbage_after = int(opt("garbage_after", 0))
        last = headers.get("last-event-id", "")
        start = int(last) + 1 if opt("resume", 1) and last.isdigit() else 1
        log.info("stream from %d (Last-Event-ID %r)", start, last)

        compressor = zlib.compressobj(wbits=31) if opt("gzip", 0) else None
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            + (b"Content-Encoding: gzip\r\n" if compressor else b"")
            + b"Transfer-Encoding: chunked\r\n\r\n"
        )

        def chunk(text: str) -> None:
            data = text.encode()
            if compressor is not None:
                data = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))

        async def send(text: str) -> None:
            if trickle:
                for byte in text:
                    chunk(byte)
                    await writer.drain()
                    await asyncio.sleep(0)
            elif split:
                half = len(text) // 2
                chunk(text[:half])
                await writer.drain()
                await asyncio.sleep(split)
                chunk(text[half:])
            else:
                chunk(text)
            await writer.drain()

        if "retry" in q:
            chunk(f"retry: {int(q['retry'][0])}{eol}{eol}")
        await writer.drain()
        await asyncio.sleep(opt("silent", 0))
        block = "z" * 65536
        while endless > 0:
            chunk(block[: min(endless, len(block))])
            endless -= len(block)
            await writer.drain()
        sent = 0
        n = start
        while True:
            if count and n > count:
                await send(f": idle{eol}{eol}")
            else:
                data = json.dumps({"n": n, "pad": pad} if pad else {"n": n})
                await send((f"id: {n}{eol}" if with_ids else "") + f"data: {data}{eol}{eol}")
                n += 1
                sent += 1
            if drop_after and sent >= drop_after:
                writer.transport.abort()
                return False
            if garbage_after and sent >= garbage_after:
                writer.write(b"zz-not-a-chunk-size\r\n")
                await writer.drain()
                await asyncio.sleep(3600)
            if hang_after and sent >= hang_after:
                await asyncio.sleep(3600)
            if end_after and sent >= end_after:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                return True
            await asyncio.sleep(interval)


async def serve(host: str, port: int, interval: float, tls: ssl.SSLContext | None = None) -> None:
    upstream = Upstream(interval)
    server = await asyncio.start_server(upstream.handle, host, port, ssl=tls)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("demo upstream on %s://%s:%d/sse", "https" if tls else "http", host, port)
    async with server:
        await stop.wait()
        upstream.stopping = True
        server.close()
        for writer in list(upstream.writers):  # streams never end by themselves: end them, or closing waits
            writer.transport.abort()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--interval", type=float, default=0.3, help="seconds between events (default 0.3)")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate chain (PEM; with --tls-key)")
    parser.add_argument("--tls-key", help="the certificate's private key (PEM)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s demo-upstream %(message)s")
    tls = None
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    asyncio.run(serve(args.host, args.port, args.interval, tls))


if __name__ == "__main__":
    main()

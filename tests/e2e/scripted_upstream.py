"""Test-only SSE upstream for the invariant's cases: ids that repeat, ids that are not UTF-8, responses that number
from 1 with data of their own, a retry sent once.

    python tests/e2e/scripted_upstream.py --port 8082

``GET /sse...`` streams events ``1``, ``2``, ... (one chunk each, ``data: {"n": N}``); the query string picks the
behaviour, so one server plays every upstream a test needs:

    interval=S     seconds between events (default 0.02)
    count=N        send N events, then nothing more (the stream stays open; 0: no end)
    ids=KIND       unique (default: N), stamp (the second it was sent, as a server stamping its events does:
                   per_id events share each), bad-utf8 (\\xff1, \\xfe1, \\xfd1...: not UTF-8, per_id events read
                   alike), bad-utf8-unique (\\xffN)
    per_id=K       events that share an id, for stamp and bad-utf8 (default 3)
    resume=HOW     after (default: the event after the last one with the Last-Event-ID), from (again from the
                   first event with it), ignore (from 1 every time)
    fresh=1        every response numbers from 1 with data of its own: ``{"n": N, "r": R}``, R counting the
                   responses to this path and query (so no two responses share an event)
    same=1         every event has the same data, ``{"same": true}`` (only the ids tell them apart)
    retry_once=MS  the first response to this path and query starts with ``retry: MS``, later ones without
    drop_after=N   cut the connection abruptly after N events of a response

``GET /requests`` answers the requests seen, oldest first, as JSON: ``{"target": ..., "last-event-id": ...}`` (the
header's bytes read as Latin-1, or null). Standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from collections import Counter
from urllib.parse import parse_qs, urlsplit


class Upstream:
    def __init__(self) -> None:
        self.requests: list[dict[str, str | None]] = []
        self.responses: Counter[str] = Counter()  # responses made, by path and query

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:  # keep-alive: one request after another
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *lines = head.decode("latin-1").split("\r\n")
            _method, target, _ = request_line.split(" ", 2)
            headers = {}
            for line in lines:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            url = urlsplit(target)
            if url.path == "/requests":
                body = json.dumps(self.requests).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                )
                writer.write(body)
                await writer.drain()
                continue
            if not (url.path == "/sse" or url.path.startswith("/sse/")):
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                continue
            self.requests.append({"target": target, "last-event-id": headers.get("last-event-id")})
            self.responses[target] += 1
            await self._stream(writer, headers.get("last-event-id"), parse_qs(url.query), self.responses[target])
            return

    async def _stream(
        self, writer: asyncio.StreamWriter, last_event_id: str | None, q: dict[str, list[str]], response: int
    ) -> None:
        def opt(name: str, default: str) -> str:
            return q[name][0] if name in q else default

        interval = float(opt("interval", "0.02"))
        count = int(opt("count", "0"))
        kind = opt("ids", "unique")
        per_id = int(opt("per_id", "3"))
        fresh = opt("fresh", "0") == "1"
        same = opt("same", "0") == "1"
        drop_after = int(opt("drop_after", "0"))

        def raw_id(n: int) -> bytes:
            group = (n - 1) // per_id + 1
            if kind == "stamp":
                return b"%d" % (1_700_000_000 + group)
            if kind == "bad-utf8":
                return bytes([0xFF - (n - 1) % per_id]) + b"%d" % group
            if kind == "bad-utf8-unique":
                return b"\xff%d" % n
            return b"%d" % n

        def start() -> int:
            how = "ignore" if fresh else opt("resume", "after")
            if last_event_id is None or how == "ignore":
                return 1
            # (the header's bytes, read as the client's UTF-8: what an id that is not UTF-8 became on its way)
            wanted = last_event_id.encode("latin-1").decode("utf-8", "replace")
            matches = [n for n in range(1, (count or 10_000) + 1) if raw_id(n).decode("utf-8", "replace") == wanted]
            if not matches:
                return 1
            return matches[0] if how == "from" else matches[-1] + 1

        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )

        def chunk(data: bytes) -> None:
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))

        if "retry_once" in q and response == 1:
            chunk(b"retry: %d\n\n" % int(q["retry_once"][0]))
        await writer.drain()
        n = start()
        sent = 0
        while not count or n <= count:
            data = {"same": True} if same else {"n": n, "r": response} if fresh else {"n": n}
            chunk(b"id: %s\ndata: %s\n\n" % (raw_id(n), json.dumps(data).encode()))
            await writer.drain()
            n += 1
            sent += 1
            if drop_after and sent >= drop_after:
                writer.transport.abort()
                return
            await asyncio.sleep(interval)
        await asyncio.sleep(3600)  # all sent: the stream stays open, silent


async def serve(port: int) -> None:
    upstream = Upstream()
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()

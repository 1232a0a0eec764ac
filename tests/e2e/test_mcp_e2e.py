"""MCP Streamable HTTP through mitmdump with the addon, with the real MCP Python SDK on both ends.

A small TCP relay sits between the client and the proxy, so a test can cut the client's connections mid-call
the way a flaky network would, while the proxy and the server keep running.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import Mitmdump, Process, async_wait_for, free_port, wait_port

SERVER = Path(__file__).with_name("mcp_server.py")


class CuttableRelay:
    """Forwards TCP connections to ``target``; :meth:`cut` aborts every open one (new ones are accepted)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.cuts = 0
        self._open: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> CuttableRelay:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()

    def cut(self) -> None:
        for client, upstream in self._open:
            client.transport.abort()
            upstream.transport.abort()
        self._open.clear()
        self.cuts += 1

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        pair = (writer, up_writer)
        self._open.append(pair)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        if pair in self._open:
            self._open.remove(pair)


@contextlib.contextmanager
def mcp_server(tmp: Path, event_store: bool = True) -> Iterator[int]:
    port = free_port()
    args: list[str | Path] = [sys.executable, SERVER, "--port", str(port)]
    if not event_store:
        args.append("--no-event-store")
    proc = Process(args, tmp / f"mcp-server-{port}.log")
    try:
        wait_port(port, proc.proc)
        yield port
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The MCP server with an event store, one for the module: each test's client has sessions of its own."""
    with mcp_server(tmp_path_factory.mktemp("mcp-server")) as port:
        yield port


async def call_count(url: str, relay: CuttableRelay | None, n: int, cut_after: int | None) -> dict[str, Any]:
    """Call ``count(n)`` at ``url``; with ``cut_after``, cut the relay's connections once that many progress
    notifications have come (mid-call: the server sends one every 0.25 s)."""
    from mcp.client.client import Client

    received: list[float] = []
    totals: set[float | None] = set()
    logs: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        received.append(progress)
        totals.add(total)

    async def on_log(params: Any) -> None:
        logs.append(str(params.data))

    async def cutter() -> None:
        assert relay is not None and cut_after is not None
        await async_wait_for(lambda: len(received) >= cut_after, 60, f"{cut_after} progress notifications")
        relay.cut()

    async with Client(url, mode="legacy", logging_callback=on_log) as client:
        task = asyncio.create_task(cutter()) if cut_after is not None else None
        result = await asyncio.wait_for(
            client.call_tool("count", {"n": n, "delay": 0.25}, progress_callback=on_progress), 60
        )
        if task is not None:
            await task
    text = result.content[0].text if result.content else ""  # type: ignore[union-attr]
    return {"progress": received, "totals": totals, "logs": logs, "result": text, "error": result.is_error}


def cut_call(proxy_port: int) -> dict[str, Any]:
    """A tool call of 8 progress notifications through ``proxy_port``, its connection cut after the third."""

    async def scenario() -> dict[str, Any]:
        async with CuttableRelay(proxy_port) as relay:
            got = await call_count(f"http://127.0.0.1:{relay.port}/mcp", relay, 8, cut_after=3)
            got["cuts"] = relay.cuts
            return got

    return asyncio.run(scenario())


def assert_every_notification_once(got: dict[str, Any]) -> None:
    assert got["cuts"] == 1
    assert got["result"] == "counted to 8" and not got["error"], got
    assert got["progress"] == [1, 2, 3, 4, 5, 6, 7, 8], got  # each notification once, in order
    assert got["logs"] == [f"log {i}" for i in range(1, 9)], got


def test_cut_mid_call_with_event_store_every_notification_once(tmp_path: Path, server: int) -> None:
    with Mitmdump(tmp_path, server) as proxy:
        got = cut_call(proxy.port)
        log = proxy.output
    assert_every_notification_once(got)
    assert "sse-resume: session" in log  # the reconnect went through the addon's decision


def metric(port: int, name: str) -> float:
    import httpx

    for line in httpx.get(f"http://127.0.0.1:{port}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def test_two_sessions_in_parallel_and_delete_drops_history(tmp_path: Path, server: int) -> None:
    metrics = free_port()
    with Mitmdump(tmp_path, server, [f"sse_metrics_port={metrics}"]) as proxy:
        wait_port(metrics)

        async def scenario() -> list[dict[str, Any]]:
            async with CuttableRelay(proxy.port) as relay:
                url = f"http://127.0.0.1:{relay.port}/mcp"
                # Both calls are cut at once, mid-call; each resumes its own stream in its own session.
                return list(await asyncio.gather(call_count(url, relay, 6, 3), call_count(url, None, 9, None)))

        six, nine = asyncio.run(scenario())
        sessions_after = metric(metrics, "sse_resume_sessions")
        log = proxy.output
    # Each session sees only its own notifications (totals 6 and 9), none twice, in order, and its result.
    # Exactly-once is checked by the single-session test above: with two sessions resuming at once, the SDK
    # server sometimes drops events stored while it replays (a race between its replay and its live tail; the
    # proxy's transcript shows they never came from upstream), which no proxy can resend.
    for got, n in ((six, 6), (nine, 9)):
        assert got["totals"] == {n}, got
        assert got["progress"] == sorted(set(got["progress"])) and set(got["progress"]) <= set(range(1, n + 1))
        assert len(got["logs"]) == len(set(got["logs"])) and got["result"] == f"counted to {n}"
        print(f"\nsession of {n}: {len(got['progress'])} of {n} progress notifications")
    assert log.count("ended (DELETE 200): history dropped") == 2  # each client ends its session on exit
    # What remains is the history of the initialize responses, sent before any session id existed.
    assert sessions_after == 1


def test_without_event_store_a_cut_call_cannot_be_resumed(tmp_path: Path) -> None:
    """What users get without a server event store: events carry no ids, so no client ever sends
    Last-Event-ID and nothing can be resumed; the cut call fails. (Keep mode is what changes this.)"""
    with mcp_server(tmp_path, event_store=False) as server, Mitmdump(tmp_path, server) as proxy:

        async def scenario() -> dict[str, Any]:
            async with CuttableRelay(proxy.port) as relay:
                try:
                    return await asyncio.wait_for(
                        call_count(f"http://127.0.0.1:{relay.port}/mcp", relay, 8, cut_after=3), 20
                    )
                except Exception as e:  # the SDK reports the broken stream in its own way
                    return {"error": repr(e)}

        got = asyncio.run(scenario())
        log = proxy.output
    print("\nwithout an event store, after the cut:", got)
    assert "result" not in got or got["result"] != "counted to 8" or len(got["progress"]) < 8, got
    assert not re.search(r"sse-resume: session \w+: (hit|up-to-date|behind|miss)", log)  # no Last-Event-ID came


def test_mcp_client_recipe(tmp_path: Path, server: int) -> None:
    import subprocess

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "mcp_client.py"
    with Mitmdump(tmp_path, server) as proxy:
        out = subprocess.run(
            [sys.executable, recipe, f"{proxy.url}/mcp", "count", '{"n": 3, "delay": 0.1}'],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.splitlines()
    assert out == [
        "progress 1/3: step 1",
        "log [info] log 1",
        "progress 2/3: step 2",
        "log [info] log 2",
        "progress 3/3: step 3",
        "log [info] log 3",
        "result: counted to 3",
    ]

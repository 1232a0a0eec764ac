"""Real processes for end-to-end tests: the demo upstream, mitmdump with the addon, and clients.

Every process runs in its own process group and is killed with it, so a test run leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Self

import httpx

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ADDON = ROOT / "addon" / "sse_resume.py"
UPSTREAM = ROOT / "recipes" / "demo_upstream.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port} after {timeout} s")


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail, naming ``what``, if it does not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"still waiting for {what} after {timeout} s")
        time.sleep(0.02)


STARTED_GROUPS: set[int] = set()  # every process group the harness started, checked at the end of the run


def live_processes(groups: set[int]) -> list[str]:
    """The processes still alive in ``groups``, as "pid command" strings (from /proc)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp in groups and state != "Z":
            alive.append(f"{entry.name} {cmdline.strip()}")
    return alive


class Process:
    """A child process in its own group, with its output in a file that tests can read."""

    def __init__(self, args: Sequence[str | os.PathLike[str]], log: Path, env: dict[str, str] | None = None) -> None:
        self.args = [str(a) for a in args]
        self.log_path = log
        self._log: IO[bytes] = log.open("wb")
        self.proc = subprocess.Popen(
            self.args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )
        STARTED_GROUPS.add(self.proc.pid)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        else:  # the leader is gone; make sure no child of its group survives it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()


def start_upstream(tmp: Path, port: int, interval: float = 0.05, extra: Sequence[str] = ()) -> Process:
    """The demo upstream on ``port`` (a test that restarts it needs to choose the port), once it listens."""
    proc = Process(
        [sys.executable, UPSTREAM, "--port", str(port), "--interval", str(interval), *extra],
        tmp / f"upstream-{port}.log",
    )
    try:
        wait_port(port, proc.proc)
    except BaseException:
        proc.stop()
        raise
    return proc


@contextlib.contextmanager
def upstream(tmp: Path, interval: float = 0.05) -> Iterator[int]:
    port = free_port()
    with start_upstream(tmp, port, interval):
        yield port


class RedisServer(Process):
    """A real redis-server on 127.0.0.1 and a free port, in memory only. ``kill`` and ``restart`` for outages."""

    def __init__(self, tmp: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.tmp = tmp
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        super().__init__([*args, "--dir", str(tmp)], tmp / f"redis-{self.port}.log")
        wait_port(self.port, self.proc)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        """Die at once, as in a crash (SIGKILL): nothing is flushed, connections just break."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def restart(self) -> RedisServer:
        """A new, empty server on the same port."""
        return RedisServer(self.tmp, self.port)


class Mitmdump(Process):
    def __init__(
        self,
        tmp: Path,
        upstream_port: int,
        options: Sequence[str] = (),
        script: Path = ADDON,
        extra: Sequence[str] = (),
        tool: str = "mitmdump",
        upstream_scheme: str = "http",  # "regular": a regular (forward) proxy instead of a reverse one
    ) -> None:
        self.port = free_port()
        args: list[str | os.PathLike[str]] = [
            BIN / tool,
            *extra,
            "-s",
            script,
            "--mode",
            "regular" if upstream_scheme == "regular" else f"reverse:{upstream_scheme}://127.0.0.1:{upstream_port}",
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            str(self.port),
            "--set",
            "connection_strategy=lazy",
        ]
        for option in options:
            args += ["--set", option]
        super().__init__(args, tmp / f"mitmdump-{self.port}.log")
        wait_port(self.port, self.proc)
        # The port opens before mitmproxy's own addons have all started (a request in between can find its TLS
        # settings unset, which stops it): wait for the line it logs once they have.
        deadline = time.monotonic() + 30
        while "listening at" not in self.output and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def numbers(events: list[tuple[str | None, str]] | list[tuple[str, str]]) -> list[int]:
    """The demo upstream's event numbers, from (id, data) pairs."""
    return [json.loads(data)["n"] for _, data in events]


def read_events(
    url: str, count: int, headers: dict[str, str] | None = None, timeout: float = 20, linger: float = 0
) -> tuple[httpx.Response, list[tuple[str | None, str]]]:
    """Read ``count`` events (id, data) from ``url`` with a real HTTP client, then hang up.

    With ``linger``, stay connected that many seconds without reading before hanging up: what the proxy sends
    meanwhile is lost with the connection, as when a network drops with events in flight.
    """
    from sse_resume_core import SSEParser

    got: list[tuple[str | None, str]] = []
    parser = SSEParser()
    with httpx.Client(timeout=timeout) as client, client.stream("GET", url, headers=headers) as response:
        for chunk in response.iter_raw():
            for block in parser.feed(chunk):
                if block.data is not None:
                    got.append((block.id, block.data))
                    if len(got) >= count:
                        time.sleep(linger)
                        return response, got
    return response, got


class EventSourceClient:
    """Behaves like a browser's EventSource: reconnects after ``retry`` ms with Last-Event-ID, forever."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, last_event_id: str = "") -> None:
        self.url = url
        self.headers = {"accept": "text/event-stream", **(headers or {})}
        self.last_event_id = last_event_id
        self.retry_ms = 100
        self.events: list[tuple[str, str]] = []  # (last event id, data) of each event, in arrival order
        self.outcomes: list[str] = []  # the sse-resume header of each response ("" when absent)
        self.comments: list[bytes] = []

    def run(self, count: int, timeout: float = 30, max_connections: int = 200) -> list[tuple[str, str]]:
        from sse_resume_core import SSEParser

        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=httpx.Timeout(5, read=timeout)) as client:
            for _ in range(max_connections):
                headers = dict(self.headers)
                if self.last_event_id:
                    headers["last-event-id"] = self.last_event_id
                parser = SSEParser()
                try:
                    with client.stream("GET", self.url, headers=headers) as response:
                        self.outcomes.append(response.headers.get("sse-resume", ""))
                        for chunk in response.iter_raw():
                            for block in parser.feed(chunk):
                                if block.raw.startswith(b":"):
                                    self.comments.append(block.raw)
                                if block.retry is not None:
                                    self.retry_ms = block.retry
                                self.last_event_id = parser.last_event_id
                                if block.data is not None:
                                    self.events.append((block.last_event_id, block.data))
                                    if len(self.events) >= count:
                                        return self.events
                except (httpx.TransportError, httpx.RemoteProtocolError):
                    pass
                if time.monotonic() > deadline:
                    break
                time.sleep(self.retry_ms / 1000)
        return self.events


def curl(url: str, *args: str, stop_after: int = 0, max_time: float = 10) -> tuple[str, list[str]]:
    """Run curl -N; with ``stop_after``, hang up after that many events. Return (output, event ids)."""
    proc = subprocess.Popen(
        ["curl", "-sN", "--max-time", str(max_time), *args, url], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdout is not None
    lines: list[str] = []
    ids: list[str] = []
    try:
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line)
            if line.startswith("id: "):
                ids.append(line[4:])
            if stop_after and line == "" and len(ids) >= stop_after:
                break
    finally:
        proc.kill()
        proc.wait()
    return "\n".join(lines), ids


def scrape(port: int) -> dict[str, float]:
    """The addon's Prometheus metrics, by sample name."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    values = {}
    for line in text.splitlines():
        if line.startswith("sse_resume_"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


# -- measuring a process -----------------------------------------------------------------------------------------


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A process's resident set (``VmRSS``) or its peak (``VmHWM``), in KiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Samples a process's RSS every ``period`` seconds in a thread; ``peak`` is the highest seen (KiB)."""

    def __init__(self, pid: int, period: float = 0.1) -> None:
        import threading

        self.pid = pid
        self.period = period
        self.peak = rss_kib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            with contextlib.suppress(OSError, LookupError):
                self.peak = max(self.peak, rss_kib(self.pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


# -- a light HTTP/1.1 SSE client, for hundreds of connections in one process -------------------------------------


class RawSSE:
    """One HTTP/1.1 request on asyncio streams; the response body parsed as SSE as it comes.

    Much lighter than a full HTTP client, so a test can hold hundreds of streams open at once. Handles chunked and
    Content-Length bodies, which is what mitmproxy sends.
    """

    def __init__(self) -> None:
        from sse_resume_core import SSEParser

        self.status = 0
        self.headers: dict[str, str] = {}
        self.parser = SSEParser()
        self.events: list[tuple[str | None, str]] = []  # (id, data) of each event received
        self.comments: list[bytes] = []
        self.ended = False
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._chunked = False
        self._left = -1  # bytes left of a Content-Length body

    async def open(self, port: int, path: str, headers: dict[str, str]) -> None:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", port)
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = (await self._reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        self.status = int(head[0].split()[1])
        for line in head[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                self.headers[name.strip().lower()] = value.strip()
        self._chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        self._left = int(self.headers.get("content-length", "-1"))

    async def read_chunk(self) -> bytes:
        """The next piece of the body as it comes (b\"\" at its end), not parsed."""
        assert self._reader is not None
        if self.ended:
            return b""
        if self._chunked:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = await self._reader.readexactly(size + 2)
            if size == 0:
                self.ended = True
            return data[:-2]
        if self._left >= 0:
            data = await self._reader.read(min(self._left, 65536)) if self._left else b""
            self._left -= len(data)
        else:
            data = await self._reader.read(65536)
        if not data:
            self.ended = True
        return data

    async def read_until(self, done: Callable[[RawSSE], bool]) -> None:
        """Read and parse until ``done(self)`` holds after an event, or the body ends."""
        while not self.ended:
            data = await self.read_chunk()
            for block in self.parser.feed(data) if data else self.parser.close():
                if block.raw.startswith(b":"):
                    self.comments.append(block.raw)
                if block.data is not None:
                    self.events.append((block.id, block.data))
                    if done(self):
                        return

    async def read_all(self) -> None:
        await self.read_until(lambda _: False)

    def abort(self) -> None:
        """Hang up at once, without reading what is in flight (a reset, as when a client dies)."""
        if self._writer is not None:
            with contextlib.suppress(OSError):
                sock = self._writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self._writer.transport.abort()
            self._writer = None

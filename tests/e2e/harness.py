"""Real processes for end-to-end tests: the demo upstream, mitmdump with the addon, and clients.

Every process runs in its own process group and is killed with it, so a test run leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import codecs
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
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Self

import httpx
from httpx_sse._decoders import SSEDecoder, SSELineDecoder  # not exported; httpx-sse is pinned below 0.5 for it

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


def wait_for[T](condition: Callable[[], T], timeout: float, what: str | Callable[[], str], every: float = 0.02) -> T:
    """Poll ``condition`` until it returns something true, and return that; fail naming ``what`` after ``timeout``.

    Tests wait for conditions, never for time: the pause between two polls only spaces the polls out.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what() if callable(what) else what}")
        time.sleep(every)


async def async_wait_for[T](condition: Callable[[], T], timeout: float, what: str, every: float = 0.01) -> T:
    """:func:`wait_for` inside an event loop, which runs on between two polls. ``condition`` must not block (a
    scrape does: run :func:`wait_for` in a thread for that, with ``asyncio.to_thread``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        await asyncio.sleep(every)


STARTED_GROUPS: set[int] = set()  # every process group the harness started (conftest checks none outlives its module)
# Every process the harness starts, and their children, carry this in their environment. A process group id is a
# pid, and once its processes are gone the kernel may give it to anyone's new process (on a busy machine, within
# minutes): only processes with this mark are this run's, to be listed or killed.
RUN_MARK = f"SSE_RESUME_TEST_RUN={os.getpid()}.{os.urandom(6).hex()}"


def live_processes(groups: set[int]) -> list[str]:
    """This run's processes still alive in ``groups``, as "pid command" strings (from /proc)."""
    return [f"{pid} {cmdline}" for pid, _, cmdline in _live(groups)]


def live_groups(groups: set[int]) -> set[int]:
    """Those of ``groups`` that still hold a live process of this run."""
    return {pgrp for _, pgrp, _ in _live(groups)}


def _live(groups: set[int]) -> list[tuple[int, int, str]]:
    mark = b"\0" + RUN_MARK.encode() + b"\0"
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            state, pgrp = fields[0], int(fields[2])
            if pgrp not in groups or state == "Z" or mark not in b"\0" + (entry / "environ").read_bytes():
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        alive.append((int(entry.name), pgrp, cmdline.strip()))
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
            env={**os.environ, **(env or {}), RUN_MARK.split("=", 1)[0]: RUN_MARK.split("=", 1)[1]},
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
        elif live_groups({self.proc.pid}):  # the leader is gone; make sure no child of its group survives it
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
        metrics: bool = False,  # serve the addon's Prometheus metrics on a port of its own (``self.metrics``)
    ) -> None:
        self.port = free_port()
        self.metrics = free_port() if metrics else 0
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
        for option in [*options, *([f"sse_metrics_port={self.metrics}"] if metrics else [])]:
            args += ["--set", option]
        super().__init__(args, tmp / f"mitmdump-{self.port}.log")
        wait_port(self.port, self.proc)
        # The port opens before mitmproxy's own addons have all started (a request in between can find its TLS
        # settings unset, which stops it): wait for the line it logs once they have.
        deadline = time.monotonic() + 30
        while "listening at" not in self.output and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if metrics:
            wait_port(self.metrics, self.proc)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metric(self, name: str) -> float:
        """One of the addon's metrics now (0 when it has no sample yet); the proxy must have ``metrics=True``."""
        assert self.metrics, "started without metrics=True"
        return scrape(self.metrics).get(name, 0.0)

    def recorded_more(self, events: int) -> Callable[[], bool]:
        """A condition: this proxy has recorded ``events`` more events than it had when this was called (for a
        proxy whose other streams are over: a count cannot tell one stream's events from another's)."""
        at_least = self.metric("sse_resume_events_recorded_total") + events
        return lambda: self.metric("sse_resume_events_recorded_total") >= at_least

    def wait_metric(self, name: str, at_least: float, timeout: float = 20) -> float:
        """Wait until the metric ``name`` reaches ``at_least``; return its value then."""
        seen = [0.0]

        def reached() -> bool:
            seen[0] = self.metric(name)
            return seen[0] >= at_least

        wait_for(reached, timeout, lambda: f"{name} >= {at_least} (it is {seen[0]})")
        return seen[0]


def numbers(events: list[tuple[str | None, str]] | list[tuple[str, str]]) -> list[int]:
    """The demo upstream's event numbers, from (id, data) pairs."""
    return [json.loads(data)["n"] for _, data in events]


@dataclass(frozen=True, slots=True)
class Event:
    """One event as a client saw it: the id field of its own block (None without one), the last event id after it
    (what EventSource reports, and sends back on reconnecting), its data."""

    id: str | None
    last_event_id: str
    data: str


class ClientDecoder:
    """The clients' SSE decoding: httpx-sse's line decoder and event decoder, fed the body's bytes as they come.

    An independent implementation, so that the addon's own parser never judges its own output. Where httpx-sse
    departs from the WHATWG rules, this says so and does what the rules say:

    - It does not strip a leading byte order mark: stripped here, once, at the start of the body.
    - It dispatches blocks that have no data line (an id-only or a retry-only block; and, once an id was seen,
      every blank line, as after a comment: its issue #35). The rules dispatch no event without a data line, so
      here such a block is no event; only its id and retry count.
    - It does not report comments: collected here from the lines it splits, in ``comments``.
    - Its decoder's last event id starts empty on each connection; a client's carries over from the last one
      (``last_event_id`` given here), until a block sets it.
    """

    def __init__(self, last_event_id: str = "") -> None:
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")  # SSE is always UTF-8
        self._lines = SSELineDecoder()
        self._events = SSEDecoder()
        self._started = False  # past the first character of the body (and its BOM, if any)
        self._data_lines = 0  # data lines in the block being read
        self._has_id = False  # the block being read has an id field (httpx-sse reads its value)
        self.last_event_id = last_event_id
        self.retry: int | None = None  # the latest reconnection time the stream set, in ms
        self.comments: list[bytes] = []

    def feed(self, chunk: bytes) -> list[Event]:
        return self._decode(self._text.decode(chunk))

    def close(self) -> list[Event]:
        """The end of the body: a block without its blank line is dropped, as the rules say."""
        events = self._decode(self._text.decode(b"", final=True))
        for line in self._lines.flush():
            self._line(line)  # not a blank line (the decoder holds back no other): nothing dispatches
        return events

    def _decode(self, text: str) -> list[Event]:
        if not text:
            return []
        if not self._started:
            self._started = True
            text = text.removeprefix("\ufeff")
            if not text:
                return []
        return [event for line in self._lines.decode(text) if (event := self._line(line)) is not None]

    def _line(self, line: str) -> Event | None:
        if line.startswith(":"):
            self.comments.append(line.encode())
        name, _, value = line.partition(":")
        if name == "data":
            self._data_lines += 1
        elif name == "id" and "\0" not in value:  # (an id with NUL in it is ignored, by the rules and httpx-sse)
            self._has_id = True
        sse = self._events.decode(line)
        if line:
            return None
        # A blank line: the end of a block. httpx-sse made an event of it or not; the rules decide what it is.
        has_id, data_lines = self._has_id, self._data_lines
        self._has_id, self._data_lines = False, 0
        if has_id:  # (httpx-sse makes no event of a block whose only field is an empty id: the id is "" then)
            self.last_event_id = sse.id if sse is not None else ""
        if sse is not None and sse.retry is not None:
            self.retry = sse.retry
        if sse is None or not data_lines:
            return None  # no data line: not an event, though httpx-sse may have made one of it
        return Event(self.last_event_id if has_id else None, self.last_event_id, sse.data)


def read_events(
    url: str,
    count: int,
    headers: dict[str, str] | None = None,
    timeout: float = 20,
    linger: float = 0,
    until: Callable[[], object] | None = None,
) -> tuple[httpx.Response, list[tuple[str | None, str]]]:
    """Read ``count`` events (id, data) from ``url`` with a real HTTP client, then hang up.

    With ``until``, stay connected without reading until ``until()`` holds (the proxy has recorded what the test
    needs, say) before hanging up: what the proxy sends meanwhile is lost with the connection, as when a network
    drops with events in flight. ``linger`` does the same for a number of seconds, for a test that needs no more
    than that the client stops reading for a while.
    """
    got: list[tuple[str | None, str]] = []
    decoder = ClientDecoder()
    with httpx.Client(timeout=timeout) as client, client.stream("GET", url, headers=headers) as response:
        for chunk in response.iter_bytes():
            for event in decoder.feed(chunk):
                got.append((event.id, event.data))
                if len(got) >= count:
                    time.sleep(linger)  # a client's behaviour (it stops reading), not a wait for something
                    if until is not None:
                        wait_for(until, timeout, "the condition to hang up on")
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
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=httpx.Timeout(5, read=timeout)) as client:
            for _ in range(max_connections):
                headers = dict(self.headers)
                if self.last_event_id:
                    headers["last-event-id"] = self.last_event_id
                decoder = ClientDecoder(self.last_event_id)
                try:
                    with client.stream("GET", self.url, headers=headers) as response:
                        self.outcomes.append(response.headers.get("sse-resume", ""))
                        for chunk in response.iter_bytes():
                            events = decoder.feed(chunk)
                            self._take(decoder)
                            for event in events:
                                self.events.append((event.last_event_id, event.data))
                                if len(self.events) >= count:
                                    self.last_event_id = event.last_event_id  # the one it has, not any later
                                    return self.events
                except (httpx.TransportError, httpx.RemoteProtocolError):
                    pass
                if time.monotonic() > deadline:
                    break
                time.sleep(self.retry_ms / 1000)  # EventSource's reconnection delay: its behaviour, not a wait
        return self.events

    def _take(self, decoder: ClientDecoder) -> None:
        self.last_event_id = decoder.last_event_id
        if decoder.retry is not None:
            self.retry_ms = decoder.retry
        self.comments += decoder.comments
        decoder.comments.clear()


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
        self.status = 0
        self.headers: dict[str, str] = {}
        self.decoder = ClientDecoder()
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
            events = self.decoder.feed(data) if data else self.decoder.close()
            self.comments += self.decoder.comments
            self.decoder.comments.clear()
            for event in events:
                self.events.append((event.id, event.data))
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

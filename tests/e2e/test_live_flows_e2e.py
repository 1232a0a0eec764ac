"""Debugging a session while it runs: a real mitmweb shows an open SSE stream's events on its flow as they are
relayed (plain and keep mode), marks and comments a resumed flow while it is open, shows the client's own
Last-Event-ID beside the one sent upstream, keeps a transcript of streams it passes through untouched, and answers
the sse.* commands in a shape its command bar shows well. Then the global bound on transcripts: a real mitmdump
holding 300 busy streams open stays within it.

The client side reads events with httpx-sse's decoder (or raw bytes); mitmweb is read through its REST API.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import EventSource

from harness import Mitmdump, RawSSE, RssSampler, free_port, rss_kib, upstream, wait_for, wait_port

PASSWORD = "live-flows-test"
SSE = "text/event-stream"
MARK = "\N{ANTICLOCKWISE DOWNWARDS AND UPWARDS OPEN CIRCLE ARROWS}"  # mitmweb's emoji for :arrows_counterclockwise:


class Web:
    """mitmweb's REST API, with its password."""

    def __init__(self, port: int) -> None:
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"authorization": f"Bearer {PASSWORD}"}, timeout=10
        )

    def flows(self) -> list[dict[str, Any]]:
        flows: list[dict[str, Any]] = self.http.get("/flows.json").json()
        return flows

    def content(self, flow_id: str) -> bytes:
        return self.http.get(f"/flows/{flow_id}/response/content.data").content

    def flow(self, path: str, condition: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """The flow of ``path`` (its start) once ``condition`` holds for it."""
        found: dict[str, Any] = {}

        def check() -> bool:
            for flow in self.flows():
                if flow["request"]["path"].startswith(path) and condition(flow):
                    found.update(flow)
                    return True
            return False

        wait_for(check, 20, what)
        return found

    def open_with(self, flow_id: str, needle: bytes) -> bytes:
        """The flow's body once it holds ``needle`` while the response is still open."""
        seen = [b""]

        def check() -> bool:
            # (mitmweb answers 500 for the body of a streamed flow that has none yet: asked once it has one)
            flows = [f for f in self.flows() if f["id"] == flow_id]
            if not flows or not (flows[0].get("response") or {}).get("contentLength"):
                return False
            seen[0] = self.content(flow_id)
            return needle in seen[0]

        wait_for(check, 20, lambda: f"flow {flow_id} shows {needle!r} (it has {len(seen[0])} bytes)")
        return seen[0]

    def command(self, name: str, *arguments: str) -> Any:
        # A POST echoes mitmweb's XSRF cookie in a header (any value, the same in both: as a browser would send).
        headers = {
            "authorization": f"Bearer {PASSWORD}",
            "cookie": "_mitmproxy_xsrf=sse-resume-test",
            "x-xsrftoken": "sse-resume-test",
        }
        url = f"{self.http.base_url}/commands/{name}"
        answer = httpx.post(url, json={"arguments": list(arguments)}, headers=headers, timeout=10).json()
        assert "error" not in answer, answer
        return answer["value"]

    def events(self) -> list[str]:
        """The event log's messages, without the time mitmweb puts in front ("[12:00:00.000] ")."""
        return [str(e["message"]).split("] ", 1)[-1] for e in self.http.get("/events.json").json()]


def open_response(flow: dict[str, Any]) -> bool:
    """Whether the flow has a response whose body is still coming."""
    response = flow.get("response") or {}
    return bool(response) and response["timestamp_end"] is None


@contextlib.contextmanager
def unavailable_upstream() -> Iterator[int]:
    """An upstream of its own that answers every request 503 with a text/event-stream body (a server in trouble)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"retry: 5000\ndata: unavailable, try later\n\n"
            self.send_response(503)
            self.send_header("content-type", SSE)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def web_options(web_port: int) -> list[str]:
    return [f"web_port={web_port}", "web_host=127.0.0.1", "web_open_browser=false", f"web_password={PASSWORD}"]


def test_mitmweb_shows_open_streams_resumes_pass_through_and_commands(tmp_path: Path) -> None:
    web_port = free_port()
    with (
        upstream(tmp_path, interval=0.05) as up,
        unavailable_upstream() as down,
        Mitmdump(tmp_path, up, web_options(web_port), tool="mitmweb", upstream_scheme="regular") as proxy,
        httpx.Client(proxy=proxy.url, timeout=20) as client,
    ):
        wait_port(web_port)
        web = Web(web_port)
        base = f"http://127.0.0.1:{up}"

        # A fresh stream: its events show on the flow while the client still reads it, and keep coming.
        with client.stream("GET", f"{base}/sse/live", headers={"accept": SSE}) as response:
            events = EventSource(response).iter_sse()
            assert [next(events).id for _ in range(5)] == ["1", "2", "3", "4", "5"]
            live = web.flow("/sse/live", open_response, "an open flow of /sse/live")
            assert b"id: 5\n" in web.open_with(live["id"], b"id: 5\n")
            got = [next(events).id for _ in range(25)]
            body = web.open_with(live["id"], b"id: %s\n" % got[-1].encode())  # refreshed as it went on
            assert body.startswith(b'id: 1\ndata: {"n": 1}\n\n')
            assert open_response(web.flow("/sse/live", lambda f: f["id"] == live["id"], "the flow"))
            view = web.http.get(f"/flows/{live['id']}/response/content/sse.json").json()
            assert view["view_name"] == "SSE" and "#1  id: 1" in view["text"] and f"id: {got[-1]}" in view["text"]

        # A resume, inline (the client does not say it accepts SSE): marked and commented while it is open, with
        # the client's Last-Event-ID and the one sent upstream.
        with client.stream("GET", f"{base}/sse/live", headers={"last-event-id": "2"}) as response:
            assert response.headers["sse-resume"] == "hit; inline"
            events = EventSource(response).iter_sse()
            assert [next(events).id for _ in range(3)] == ["3", "4", "5"]
            resumed = web.flow(
                "/sse/live",
                lambda f: open_response(f) and bool(f["marked"]) and "client's Last-Event-ID '2'" in f["comment"],
                "an open, marked flow of the resume",
            )
            assert resumed["marked"] == MARK
            assert "served" in resumed["comment"] and "from history after id '2'" in resumed["comment"]
            assert "sent upstream as '" in resumed["comment"]
            assert resumed["request"]["headers"] != []  # (the request shows what went upstream)
            sent = dict((k.lower(), v) for k, v in resumed["request"]["headers"])["last-event-id"]
            assert sent != "2" and f"sent upstream as '{sent}'" in resumed["comment"]
            next(events)

        # Passed through untouched, yet with a transcript: MCP 2026-07-28 (while open, too) and a 503.
        new = {"accept": SSE, "mcp-protocol-version": "2026-07-28"}
        with client.stream("GET", f"{base}/sse/newest", headers=new) as response:
            assert "sse-resume" not in response.headers
            events = EventSource(response).iter_sse()
            assert [next(events).id for _ in range(3)] == ["1", "2", "3"]
            newest = web.flow("/sse/newest", open_response, "an open flow of /sse/newest")
            assert web.open_with(newest["id"], b"id: 3\n").startswith(b'id: 1\ndata: {"n": 1}\n\n')
        failing = client.get(f"http://127.0.0.1:{down}/sse/down", headers={"accept": SSE})
        assert failing.status_code == 503 and failing.content == b"retry: 5000\ndata: unavailable, try later\n\n"
        down_flow = web.flow(
            "/sse/down", lambda f: bool((f.get("response") or {}).get("contentLength")), "the 503 flow with a body"
        )
        assert web.content(down_flow["id"]) == failing.content

        # The commands: one readable line in the command bar, the table in the event log.
        sessions = web.command("sse.sessions")
        assert isinstance(sessions, str) and "\n" not in sessions
        assert sessions.startswith("1 session held: ") and sessions.endswith("(the table is in the event log)")
        key = sessions.removeprefix("1 session held: ").split()[0]
        table = [e for e in web.events() if e.startswith("sse.sessions\n")]
        assert table, web.events()
        rows = table[-1].splitlines()
        assert rows[1].split()[:3] == ["session", "streams", "events"] and rows[2].startswith(key)
        history = web.command("sse.history")  # without an argument: the only session there is
        assert "\n" not in history and history.startswith(f"session {key}: ") and "events held" in history
        log_rows = [e for e in web.events() if e.startswith("sse.history\n")][-1].splitlines()
        assert log_rows[1].startswith(f"session {key}:") and len(log_rows) > 5
        stats = web.command("sse.stats")
        assert "\n" not in stats and stats.startswith("sessions 1, events ") and "hits 1" in stats
        settings = web.command("sse.settings")
        assert "\n" not in settings and "not at their defaults" in settings
        assert proxy.proc.poll() is None
    assert "Traceback" not in proxy.output


def test_mitmweb_shows_kept_streams_live(tmp_path: Path) -> None:
    web_port = free_port()
    options = [*web_options(web_port), "sse_keep_upstream=true"]
    with (
        upstream(tmp_path, interval=0.05) as up,
        Mitmdump(tmp_path, up, options, tool="mitmweb") as proxy,
        httpx.Client(timeout=20) as client,
    ):
        wait_port(web_port)
        web = Web(web_port)
        with client.stream("GET", f"{proxy.url}/sse/kept", headers={"accept": SSE}) as response:
            events = EventSource(response).iter_sse()
            assert [next(events).id for _ in range(5)] == ["1", "2", "3", "4", "5"]
            kept = web.flow("/sse/kept", open_response, "an open flow of /sse/kept")
            got = [next(events).id for _ in range(20)]
            assert web.open_with(kept["id"], b"id: %s\n" % got[-1].encode()).startswith(b"id: 1\n")
        with client.stream("GET", f"{proxy.url}/sse/kept", headers={"accept": SSE, "last-event-id": "3"}) as response:
            events = EventSource(response).iter_sse()
            assert [next(events).id for _ in range(3)] == ["4", "5", "6"]
            resumed = web.flow(
                "/sse/kept",
                lambda f: open_response(f) and bool(f["marked"]),
                "an open, marked flow of the kept resume",
            )
            assert resumed["marked"] == MARK and "kept:" in resumed["comment"]
            assert "client's Last-Event-ID '3'" in resumed["comment"]
            web.open_with(resumed["id"], b"id: 6\n")
        assert proxy.proc.poll() is None
    assert "Traceback" not in proxy.output


STREAMS = 300
# Each transcript is given half the default (512 KiB), and all of them together a quarter of the default bound:
# unbounded, they would hold 150 MiB, which the bound keeps to 16, as it keeps 300 MiB to 64 at the defaults (1 MiB
# each, 64 MiB in all), with half the bytes to relay (at the defaults the test took 125 s of a loaded run).
TRANSCRIPT = 512 * 1024
TOTAL = 16  # MiB: sse_transcript_total_bytes
READ_EACH = TRANSCRIPT + 64 * 1024  # bytes each client reads: more than its transcript holds, so each one fills up
SLACK_MIB = 64  # allocator slack, the pieces in flight, and the noise between two runs (measured: up to ~30 MiB)


async def busy_streams(port: int) -> int:
    """Open STREAMS streams of large events, read READ_EACH bytes of each, and hold them all open at once;
    return the bytes read."""
    clients = [RawSSE() for _ in range(STREAMS)]

    async def read(i: int, client: RawSSE) -> int:
        await client.open(port, f"/sse/busy{i}?pad=8192&interval=0", {"accept": SSE})
        got = 0
        while got < READ_EACH and not client.ended:
            got += len(await client.read_chunk())  # (raw bytes: nothing parsed on this side)
        return got

    try:
        sizes = await asyncio.wait_for(asyncio.gather(*(read(i, c) for i, c in enumerate(clients))), 240)
    finally:
        for client in clients:
            client.abort()
    return sum(sizes)


def rss_growth(tmp_path: Path, options: list[str]) -> tuple[float, str]:
    """How much a mitmdump's RSS grows (MiB, at its peak) while it relays the busy streams; and what it logged."""
    # History is capped low, so what grows with the streams is their transcripts (1 MiB each by default) and
    # mitmproxy's own per-connection memory.
    options = ["sse_max_history_bytes=4194304", *options]
    with upstream(tmp_path, interval=0.05) as up, Mitmdump(tmp_path, up, options) as proxy:
        pid = proxy.proc.pid
        baseline = rss_kib(pid)
        sampler = RssSampler(pid)
        started = time.monotonic()
        try:
            read = asyncio.run(busy_streams(proxy.port))
        finally:
            peak = sampler.stop()
        took = time.monotonic() - started
        assert proxy.proc.poll() is None
        log = proxy.output
    assert read >= STREAMS * READ_EACH
    grew = (peak - baseline) / 1024
    print(
        f"\n{STREAMS} open streams, {' '.join(options)}: {read / 2**20:.0f} MiB relayed in {took:.0f} s, RSS "
        f"{baseline / 1024:.0f} MiB before, peak {peak / 1024:.0f} MiB (+{grew:.0f} MiB)"
    )
    return grew, log


@pytest.mark.timeout(300)
def test_transcripts_of_300_open_streams_stay_within_the_global_bound(tmp_path: Path) -> None:
    """The same 300 busy streams through a mitmdump without transcripts, then one with them: what the transcripts
    add stays within sse_transcript_total_bytes (unbounded, they would hold 150 MiB)."""
    without, _ = rss_growth(tmp_path, ["sse_transcript_bytes=0"])
    grew, log = rss_growth(
        tmp_path, [f"sse_transcript_bytes={TRANSCRIPT}", f"sse_transcript_total_bytes={TOTAL * 1024 * 1024}"]
    )
    print(f"transcripts added {grew - without:.0f} MiB (bound {TOTAL} MiB)")
    assert grew - without <= TOTAL + SLACK_MIB
    assert "Traceback" not in log

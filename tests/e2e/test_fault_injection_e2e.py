"""Fault injection through a real mitmdump: each command and option, in plain and keep mode, with clients that
decode with httpx-sse and reconnect with Last-Event-ID as EventSource does; and an MCP client (the Python SDK)
through injected cuts. Each test asserts the event ids every connection received, and what the saved flows say.

mitmdump has no command prompt: tests/e2e/command_addon.py runs the commands inside it for these tests (in
mitmweb and mitmproxy's console a user types them; the last test goes through mitmweb's own command API).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from mitmproxy.http import HTTPFlow
from mitmproxy.io import FlowReader

from harness import ROOT, ClientDecoder, Mitmdump, async_wait_for, free_port, wait_for, wait_port
from test_mcp_e2e import call_count, mcp_server
from test_options_e2e import run_until_exit

COMMANDS = ROOT / "tests" / "e2e" / "command_addon.py"
MODES = {"plain": [], "keep": ["sse_keep_upstream=true"]}
RECONNECT = 0.05  # seconds a client waits before it reconnects (its own choice; it ignores the stream's retry)


@dataclass
class Connection:
    """What one of a client's connections got: the sse-resume header, the ids of its events, how it ended."""

    outcome: str
    ids: list[str | None] = field(default_factory=list)
    broken: bool = False  # the connection broke in the middle of the response (not a clean end, not the client)


class Client:
    """Reads an SSE URL as EventSource does, reconnecting with Last-Event-ID, and keeps each connection's record.

    ``on_event(client)`` runs after each event, in the client's thread; the client stops once ``count`` events
    came in all, or once ``until(client)`` holds (looked at after each event and each new connection)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.headers = {"accept": "text/event-stream", **(headers or {})}
        self.connections: list[Connection] = []
        self.last_event_id = ""

    @property
    def ids(self) -> list[str | None]:
        return [i for c in self.connections for i in c.ids]

    def run(
        self,
        count: int = 0,
        until: Callable[[Client], bool] = lambda _: False,
        on_event: Callable[[Client], None] = lambda _: None,
        timeout: float = 30,
    ) -> list[Connection]:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=httpx.Timeout(5, read=timeout)) as http:
            for _ in range(100):
                headers = dict(self.headers)
                if self.last_event_id:
                    headers["last-event-id"] = self.last_event_id
                decoder = ClientDecoder(self.last_event_id)
                try:
                    with http.stream("GET", self.url, headers=headers) as response:
                        connection = Connection(response.headers.get("sse-resume", ""))
                        self.connections.append(connection)
                        if until(self):
                            return self.connections
                        for chunk in response.iter_bytes():
                            for event in decoder.feed(chunk):
                                connection.ids.append(event.id)
                                self.last_event_id = decoder.last_event_id
                                if (count and len(self.ids) >= count) or until(self):
                                    return self.connections
                                on_event(self)
                            self.last_event_id = decoder.last_event_id
                except httpx.RemoteProtocolError:  # the connection broke mid-response (HTTP/1.1: chunked, unended)
                    self.connections[-1].broken = True
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.url}: {len(self.ids)} of {count} events in {timeout} s")
                time.sleep(RECONNECT)  # the client's reconnection delay: its behaviour, not a wait for something
        return self.connections


def command(proxy: Mitmdump, name: str, **body: Any) -> str:
    """Run a command inside the proxy (see tests/e2e/command_addon.py); its answer."""
    response = httpx.post(f"{proxy.url}/__command__/{name}", json=body, timeout=10)
    assert response.status_code == 200, response.text
    return response.text


def numbered(first: int, last: int) -> list[str | None]:
    return [str(n) for n in range(first, last + 1)]


def saved(path: Path) -> list[HTTPFlow]:
    """The flows mitmdump saved (-w), once it has stopped: SSE responses only, in the order they began."""
    with path.open("rb") as f:
        flows = [f for f in FlowReader(f).stream() if isinstance(f, HTTPFlow) and f.response is not None]
    sse = [f for f in flows if f.response and f.response.headers.get("content-type", "").startswith("text/event")]
    return sorted(sse, key=lambda f: f.request.timestamp_start)


@pytest.fixture
def proxy_with(tmp_path: Path, upstream_port: int) -> Iterator[Callable[..., Mitmdump]]:
    """Starts mitmdump with the addon, the commands' helper, saved flows in tmp_path/flows.mitm, and options."""
    started: list[Mitmdump] = []

    def start(mode: str, *options: str) -> Mitmdump:
        proxy = Mitmdump(
            tmp_path,
            upstream_port,
            [*MODES[mode], *options],
            extra=["-s", str(COMMANDS), "-w", str(tmp_path / "flows.mitm")],
        )
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


# -- options ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_cut_after_n_events_every_stream_is_cut_and_the_client_resumes(
    mode: str, proxy_with: Callable[..., Mitmdump], tmp_path: Path
) -> None:
    proxy = proxy_with(mode, "sse_fault_cut_after=5")
    # The upstream starts again from 1 on each connection: the proxy resumes the client from its history.
    client = Client(f"{proxy.url}/sse?resume=0")
    connections = client.run(count=20)
    proxy.stop()
    assert client.ids == numbered(1, 20)  # every event once, in order, across the cuts
    streamed = [c for c in connections if c.outcome != "hit"]  # (a plain replay is a whole response: no stream)
    assert all(c.broken and len(c.ids) == 5 for c in streamed[:-1]), connections
    assert not any(c.broken for c in connections if c.outcome == "hit")
    if mode == "keep":  # each reconnect is one kept stream, replay and live together: cut after 5 events too
        assert [c.ids for c in connections] == [numbered(n, n + 4) for n in (1, 6, 11, 16)], connections
        assert [c.broken for c in connections] == [True, True, True, False]
    flows = saved(tmp_path / "flows.mitm")
    cut = [f for f in flows if f.marked == ":scissors:"]
    assert len(cut) == sum(len(c.ids) == 5 for c in streamed) >= 3  # (the last too, as the client hung up)
    first = cut[0]
    assert first.comment.startswith(
        "sse-resume fault: client connection cut after 5 events, last id '5' (sse_fault_cut_after=5)"
    )
    assert first.metadata["sse_faults"]["cut"]["after_events"] == 5
    body = (first.response.get_text() if first.response is not None else None) or ""
    assert [line for line in body.splitlines() if line[:3] == "id:"][-1] == "id: 5"  # what its client got


@pytest.mark.parametrize("mode", MODES)
def test_cut_every_s_seconds_each_stream_is_cut_after_its_time(
    mode: str, proxy_with: Callable[..., Mitmdump], tmp_path: Path
) -> None:
    proxy = proxy_with(mode, "sse_fault_cut_every=1")
    client = Client(f"{proxy.url}/sse")
    client.run(until=lambda c: sum(x.broken for x in c.connections) >= 2 and len(c.ids) >= 5)
    proxy.stop()
    assert client.ids == numbered(1, len(client.ids))  # every event once, in order
    flows = saved(tmp_path / "flows.mitm")
    cut = [f for f in flows if f.marked == ":scissors:"]
    assert len(cut) >= 2 and all("(sse_fault_cut_every=1)" in f.comment for f in cut)
    assert all(f.metadata["sse_faults"]["cut"]["by"] == "sse_fault_cut_every=1" for f in cut)


@pytest.mark.parametrize("mode", MODES)
def test_a_stall_holds_the_events_after_every_nth_for_s_seconds(
    mode: str, proxy_with: Callable[..., Mitmdump], tmp_path: Path
) -> None:
    proxy = proxy_with(mode, "sse_fault_stall_after=5", "sse_fault_stall_for=1")
    client = Client(f"{proxy.url}/sse")
    connections = client.run(count=12)
    proxy.stop()
    assert [c.ids for c in connections] == [numbered(1, 12)] and not connections[0].broken  # late, not lost
    (flow,) = saved(tmp_path / "flows.mitm")
    assert flow.marked == ":hourglass:"
    assert "stalled 1 time for 1 s, after every 5th event (sse_fault_stall_after=5)" in flow.comment or (
        "stalled 2 times for 1 s" in flow.comment
    )
    faults = flow.metadata["sse_faults"]
    assert faults["stalls"] >= 1 and faults["stalled_seconds"] >= 1.0  # (the proxy's clock: at least the stall)


@pytest.mark.parametrize("mode", MODES)
def test_a_repeat_sends_every_nth_event_twice(mode: str, proxy_with: Callable[..., Mitmdump], tmp_path: Path) -> None:
    proxy = proxy_with(mode, "sse_fault_repeat_after=3")
    client = Client(f"{proxy.url}/sse")
    client.run(count=12)
    proxy.stop()
    assert client.ids == ["1", "2", "3", "3", "4", "5", "6", "6", "7", "8", "9", "9"]  # for the client to drop
    (flow,) = saved(tmp_path / "flows.mitm")
    assert flow.marked == ":repeat:" and "every 3rd (sse_fault_repeat_after=3)" in flow.comment
    assert flow.metadata["sse_faults"]["repeats"] >= 3


def test_the_filter_limits_the_schedules_to_the_flows_it_matches(
    proxy_with: Callable[..., Mitmdump], tmp_path: Path
) -> None:
    proxy = proxy_with("plain", "sse_fault_repeat_after=2", "sse_fault_filter=~u /sse/chosen")
    chosen, other = Client(f"{proxy.url}/sse/chosen"), Client(f"{proxy.url}/sse/other")
    chosen.run(count=4)
    other.run(count=4)
    proxy.stop()
    assert chosen.ids == ["1", "2", "2", "3"] and other.ids == numbered(1, 4)


# -- commands --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_sse_cut_cuts_a_live_stream_now_and_the_client_resumes(mode: str, proxy_with: Callable[..., Mitmdump]) -> None:
    proxy = proxy_with(mode)
    answers: list[str] = []

    def cut_at_five(client: Client) -> None:
        connection = client.connections[-1]
        # (not a replay served as a response of its own, which ends by itself: under load, the command of the
        # first cut may take effect events after the 5th, leaving more than 5 to replay)
        replay = mode == "plain" and connection.outcome.startswith("hit")
        if len(connection.ids) == 5 and len(answers) < 2 and not replay:
            answers.append(command(proxy, "sse.cut", flows="~u /sse"))

    def after_two_cuts(client: Client) -> bool:  # (and 5 events of the connection after them)
        return sum(c.broken for c in client.connections) == 2 and len(client.connections[-1].ids) >= 5

    client = Client(f"{proxy.url}/sse?resume=0")
    connections = client.run(until=after_two_cuts, on_event=cut_at_five)
    assert client.ids == numbered(1, len(client.ids))  # every event once, in order, across two cuts
    assert answers == ["cut the client connection of 1 SSE stream (" + a.split("(", 1)[1] for a in answers]
    assert all(a.endswith("): the clients reconnect with Last-Event-ID") for a in answers)
    broken = [c for c in connections if c.broken]
    assert len(broken) == 2 and all(len(c.ids) >= 5 for c in broken)  # cut at the 5th, or just after it


@pytest.mark.parametrize("mode", MODES)
def test_sse_cut_cuts_an_idle_stream_at_once(mode: str, proxy_with: Callable[..., Mitmdump], tmp_path: Path) -> None:
    """The upstream goes silent after 5 events on a connection: the cut needs no bytes from it to happen."""
    proxy = proxy_with(mode)

    def cut_when_idle(client: Client) -> None:
        if len(client.connections[-1].ids) == 5:
            command(proxy, "sse.cut", flows="~u /sse")

    client = Client(f"{proxy.url}/sse?hang_after=5")
    if mode == "plain":  # each reconnect is a new upstream connection, which goes on from the client's id
        connections = client.run(count=15, on_event=cut_when_idle)
        assert [c.ids for c in connections] == [numbered(1, 5), numbered(6, 10), numbered(11, 15)]
        assert [c.broken for c in connections] == [True, True, False]
    else:  # the kept upstream stays silent: the client is back, with nothing it had sent twice
        connections = client.run(until=lambda c: len(c.connections) == 2, on_event=cut_when_idle)
        assert [c.ids for c in connections] == [numbered(1, 5), []] and connections[0].broken
        assert connections[1].outcome == "up-to-date; kept"  # (nothing newer held for it)
    proxy.stop()
    first = saved(tmp_path / "flows.mitm")[0]
    assert first.marked == ":scissors:"
    assert first.comment.startswith("sse-resume fault: client connection cut (command sse.cut)")


@pytest.mark.parametrize("mode", MODES)
def test_sse_cut_session_cuts_every_stream_of_the_session_and_no_other(
    mode: str, proxy_with: Callable[..., Mitmdump]
) -> None:
    proxy = proxy_with(mode)
    done = threading.Event()
    session_a = {"mcp-session-id": "session-a"}
    # Session A's streams go silent after 3 events on each connection; session B's goes on.
    a1 = Client(f"{proxy.url}/sse/one?hang_after=3", session_a)
    a2 = Client(f"{proxy.url}/sse/two?hang_after=3", session_a)
    b = Client(f"{proxy.url}/sse/three", {"mcp-session-id": "session-b"})
    at_cut: list[int] = []

    def run_a(client: Client) -> None:
        if mode == "plain":
            client.run(count=6)  # back after the cut: the upstream goes on from the client's id
        else:
            client.run(until=lambda c: len(c.connections) == 2)

    threads = [
        threading.Thread(target=run_a, args=(a1,)),
        threading.Thread(target=run_a, args=(a2,)),
        threading.Thread(target=b.run, kwargs={"until": lambda c: done.is_set() and len(c.ids) >= at_cut[0] + 3}),
    ]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: all(len(c.ids) >= 3 for c in (a1, a2, b)), 30, "3 events on each stream")
        at_cut.append(len(b.ids))
        answer = command(proxy, "sse.cut.session", args=["session-a"])
        done.set()
    finally:
        done.set()
        for t in threads:
            t.join(60)
    assert answer.startswith("cut the client connections of 2 SSE streams ("), answer
    for a in (a1, a2):
        assert a.connections[0].ids == numbered(1, 3) and a.connections[0].broken
        assert a.ids == (numbered(1, 6) if mode == "plain" else numbered(1, 3))
    assert len(b.connections) == 1 and not b.connections[0].broken and b.ids == numbered(1, len(b.ids))


def test_sse_faults_says_what_is_scheduled(proxy_with: Callable[..., Mitmdump]) -> None:
    proxy = proxy_with("plain", "sse_fault_repeat_after=2")
    Client(f"{proxy.url}/sse").run(count=4)
    assert command(proxy, "sse.faults", args=[]).startswith(
        "scheduled: sse_fault_repeat_after=2; 0 open SSE streams (0 following the schedules); injected so far: "
        "0 cuts, 0 stalls, "
    )


def test_invalid_fault_options_stop_mitmdump_naming_them(tmp_path: Path) -> None:
    status, output = run_until_exit(tmp_path, ["--set", "sse_fault_cut_after=x", "--set", "sse_fault_filter=~u ("])
    assert status is not None and status != 0, output
    assert "sse-resume: invalid option: Failed to parse option sse_fault_cut_after: not an integer: x" in output
    assert "sse-resume: invalid option: sse_fault_filter: Invalid filter expression" in output
    assert "Traceback" not in output


# -- an MCP client through injected cuts ------------------------------------------------------------------------


def assert_counted_once(got: dict[str, Any], n: int) -> None:
    assert got["progress"] == list(range(1, n + 1)), got  # every notification once, in order
    assert got["logs"] == [f"log {i}" for i in range(1, n + 1)], got
    assert got["result"] == f"counted to {n}" and not got["error"], got


# In keep mode (as recipes/mcp_faults.md runs it) the proxy reads a call's stream to its end while the client is
# away, so the SDK server never replays it: its replay can lose events stored meanwhile (docs/mcp.md), which no
# proxy can resend; the client's resume is served by the proxy alone. Only POST streams are cut: the SDK client
# resumes a broken GET from a stale id (the recipe says more).
KEEP_AND_CUT_POSTS = ["sse_keep_upstream=true", "sse_fault_cut_after=3", "sse_fault_filter=~m POST"]


def test_mcp_calls_whose_post_streams_are_cut_get_every_notification_once(tmp_path: Path) -> None:
    """Each call's stream is cut after its third event (the priming event, progress 1, log 1); the SDK client
    resumes it with a GET and Last-Event-ID."""
    flows = str(tmp_path / "flows.mitm")
    with mcp_server(tmp_path) as server, Mitmdump(tmp_path, server, KEEP_AND_CUT_POSTS, extra=["-w", flows]) as proxy:
        for n in (6, 8):  # two calls, two sessions
            assert_counted_once(asyncio.run(call_count(f"{proxy.url}/mcp", None, n, None)), n)
    cut = [f for f in saved(tmp_path / "flows.mitm") if f.marked == ":scissors:"]
    assert [f.request.method for f in cut] == ["POST", "POST"]
    assert all(f.comment.startswith("sse-resume fault: client connection cut after 3 events") for f in cut)


def test_mcp_recipe_cut_a_tool_calls_stream(tmp_path: Path) -> None:
    """recipes/mcp_faults.md, as a user runs it: its client prints each notification once, then the result."""
    with mcp_server(tmp_path) as server, Mitmdump(tmp_path, server, KEEP_AND_CUT_POSTS) as proxy:
        out = subprocess.run(
            [sys.executable, ROOT / "recipes" / "mcp_client.py", f"{proxy.url}/mcp", "count", '{"n": 4, "delay": 0.2}'],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.splitlines()
        log = proxy.output
    assert out == [line for i in range(1, 5) for line in (f"progress {i}/4: step {i}", f"log [info] log {i}")] + [
        "result: counted to 4"
    ]
    assert "sse-resume: fault: cut the client connection of flow" in log


def test_mcp_session_cut_by_command_mid_call_every_notification_once(tmp_path: Path) -> None:
    """``sse.cut.session`` with the call's Mcp-Session-Id, after its third progress notification: the tool call's
    stream and the session's GET stream both break; the call still gets every notification once."""
    with (
        mcp_server(tmp_path) as server,
        Mitmdump(
            tmp_path, server, MODES["keep"], extra=["-s", str(COMMANDS), "-w", str(tmp_path / "flows.mitm")]
        ) as proxy,
    ):
        answers: list[str] = []

        async def scenario() -> dict[str, Any]:
            from mcp.client.client import Client as MCPClient

            received: list[float] = []
            logs: list[str] = []

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                received.append(progress)

            async def on_log(params: Any) -> None:
                logs.append(str(params.data))

            async def cutter() -> None:
                await async_wait_for(lambda: len(received) >= 3, 60, "3 progress notifications")
                response = await asyncio.to_thread(
                    httpx.post,
                    f"{proxy.url}/__command__/sse.cut.session",
                    json={"session_of": "~m POST & ~u /mcp"},
                    timeout=10,
                )
                answers.append(response.text)

            async with MCPClient(f"{proxy.url}/mcp", mode="legacy", logging_callback=on_log) as client:
                task = asyncio.create_task(cutter())
                result = await asyncio.wait_for(
                    client.call_tool("count", {"n": 8, "delay": 0.25}, progress_callback=on_progress), 60
                )
                await task
            text = result.content[0].text if result.content else ""  # type: ignore[union-attr]
            return {"progress": received, "logs": logs, "result": text, "error": result.is_error}

        got = asyncio.run(scenario())
    assert_counted_once(got, 8)
    assert len(answers) == 1 and answers[0].startswith("cut the client connection"), answers
    cut = [f for f in saved(tmp_path / "flows.mitm") if f.marked == ":scissors:"]
    assert "POST" in [f.request.method for f in cut]
    assert all("(command sse.cut.session" in f.comment for f in cut)


# -- mitmweb: the command as a user types it ---------------------------------------------------------------------


def test_in_mitmweb_sse_cut_takes_a_filter_expression(tmp_path: Path, upstream_port: int) -> None:
    web = free_port()
    secret = "fault-test-secret"
    with Mitmdump(
        tmp_path,
        upstream_port,
        [f"web_port={web}", "web_host=127.0.0.1", f"web_password={secret}", "web_open_browser=false"],
        tool="mitmweb",
    ) as proxy:
        wait_port(web, proxy.proc)
        answer: list[dict[str, Any]] = []

        def cut_at_three(client: Client) -> None:
            if len(client.ids) == 3 and not answer:
                response = httpx.post(
                    f"http://127.0.0.1:{web}/commands/sse.cut",
                    json={"arguments": ["~u /sse & ~m GET"]},
                    # (a POST echoes mitmweb's XSRF cookie in a header, as a browser does)
                    headers={
                        "authorization": f"Bearer {secret}",
                        "cookie": "_mitmproxy_xsrf=fault-test",
                        "x-xsrftoken": "fault-test",
                    },
                    timeout=10,
                )
                answer.append(json.loads(response.text))

        def cut_and_back(client: Client) -> bool:  # (and 3 events of the connection after the cut)
            return bool(client.connections[0].broken) and len(client.connections[-1].ids) >= 3

        client = Client(f"{proxy.url}/sse")
        connections = client.run(until=cut_and_back, on_event=cut_at_three)
    assert answer and answer[0]["value"].startswith("cut the client connection of 1 SSE stream"), answer
    # Cut at the 3rd, or after it: under load the command can take effect some events later (the client's
    # thread waits for its answer meanwhile, and reads what came once it has it). A fixed count of events could
    # all have come before the cut.
    assert connections[0].broken and len(connections[0].ids) >= 3
    assert client.ids == numbered(1, len(client.ids))  # every event once, in order, across the cut


# -- why the cut is made as it is --------------------------------------------------------------------------------

KILLER = """
from mitmproxy import http


class Killer:
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        chunks = []

        def stream(chunk: bytes) -> bytes | list[bytes]:
            chunks.append(chunk)
            if len(chunks) == 3:
                flow.kill()  # what mitmproxy offers to stop a flow
            return chunk or []

        flow.response.stream = stream


addons = [Killer()]
"""


def test_mitmproxys_kill_does_not_cut_a_streaming_flow(tmp_path: Path, upstream_port: int) -> None:
    """The fact the cut is built on (mitmproxy 12.3.1): ``flow.kill()`` while a response streams leaves the stream
    running, so sse.cut closes the client connection through mitmproxy's connection handler instead."""
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    with Mitmdump(tmp_path, upstream_port, script=killer) as proxy:
        client = Client(f"{proxy.url}/sse")
        connections = client.run(count=10)
    assert [c.ids for c in connections] == [numbered(1, 10)] and not connections[0].broken

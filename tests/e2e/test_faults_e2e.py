"""Faults, with real processes: the upstream killed and restarted, a client killed mid-event, and the addon hit by
an internal error inside a running mitmdump (forced by tests/e2e/fault_addon.py). Traffic keeps flowing, each error
is logged once with its context, and nothing a client already received is lost or sent twice."""

from __future__ import annotations

import signal
import subprocess
import threading
from pathlib import Path

import httpx

from harness import (
    ROOT,
    EventSourceClient,
    Mitmdump,
    Process,
    curl,
    free_port,
    numbers,
    read_events,
    start_upstream,
    wait_for,
)

FAULT = ROOT / "tests" / "e2e" / "fault_addon.py"


def test_upstream_killed_and_restarted_the_client_stream_goes_on(tmp_path: Path) -> None:
    port = free_port()
    first = start_upstream(tmp_path, port)
    second: list[Process] = []
    try:
        with Mitmdump(tmp_path, port) as proxy:
            client = EventSourceClient(f"{proxy.url}/sse/restart")

            def kill_and_restart() -> None:
                wait_for(lambda: len(client.events) >= 10, 30, "10 events before the kill", every=0.005)
                first.proc.send_signal(signal.SIGKILL)  # no goodbye: the connection just dies
                first.stop()
                # The upstream stays down until the client's reconnects have met it down, twice: each gets 502
                # from the proxy, and the client retries.
                answered = len(client.outcomes)
                wait_for(lambda: len(client.outcomes) >= answered + 2, 30, "two reconnects while it is down")
                second.append(start_upstream(tmp_path, port))

            killer = threading.Thread(target=kill_and_restart)
            killer.start()
            events = client.run(40, timeout=30)
            killer.join()
            assert proxy.proc.poll() is None
            assert "Traceback" not in proxy.output
        assert numbers(events) == list(range(1, 41))  # every event once, in order, across the restart
        assert second and "stream from" in second[0].output  # the new upstream was asked to resume
    finally:
        first.stop()
        for p in second:
            p.stop()


def test_client_killed_mid_event_loses_nothing(tmp_path: Path, upstream_port: int) -> None:
    with Mitmdump(tmp_path, upstream_port) as proxy:
        url = f"{proxy.url}/sse/split?split=0.5&interval=0.05"
        proc = subprocess.Popen(["curl", "-sN", url], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None
        seen = b""
        while b"id: 3\n" not in seen:  # the first half of event 3: its second half is half a second away
            line = proc.stdout.readline()
            assert line, "curl ended early"
            seen += line
        proc.kill()
        proc.wait()
        assert b"id: 2\ndata: " in seen
        out, ids = curl(url, "-H", "Last-Event-ID: 2", stop_after=3)
        assert ids[:3] == ["3", "4", "5"], out  # event 3 again, whole, as the next one; nothing twice
        assert '{"n": 3}' in out
        again = httpx.get(f"{proxy.url}/sse/plain?end_after=2")
        assert again.status_code == 200 and "id: 2" in again.text  # others keep being served
        assert "Traceback" not in proxy.output


def test_internal_error_while_relaying_is_logged_once_and_traffic_flows(tmp_path: Path, upstream_port: int) -> None:
    options = ["fault_record_at=5"]
    with Mitmdump(tmp_path, upstream_port, options, extra=["-s", str(FAULT)], metrics=True) as proxy:
        url = f"{proxy.url}/sse/fault?end_after=30&interval=0.01"
        response = httpx.get(url, timeout=10)
        assert response.status_code == 200
        ids = [line[4:] for line in response.text.splitlines() if line.startswith("id: ")]
        assert ids == [str(n) for n in range(1, 31)]  # the failing write and everything after: passed through
        # The addon recovers for the next stream: resumption works again.
        url = f"{proxy.url}/sse/after-fault?hang_after=6"
        read_events(url, 3, until=proxy.recorded_more(6))
        hit = httpx.get(url, headers={"accept": "text/event-stream", "last-event-id": "3"})
        assert hit.headers.get("sse-resume") == "hit"
        assert [line[4:] for line in hit.text.splitlines() if line.startswith("id: ")] == ["4", "5", "6"]
        log = proxy.output
    assert log.count("internal error relaying") == 1, log
    line = next(line for line in log.splitlines() if "internal error relaying" in line)
    assert "session" in line and "passing the rest through" in line
    assert log.count("forced fault in the history store") >= 1  # the traceback names the cause
    assert "mitmproxy has crashed" not in log


def test_internal_error_deciding_passes_the_request_through(tmp_path: Path, upstream_port: int) -> None:
    with Mitmdump(tmp_path, upstream_port, ["fault_decide_id=3"], extra=["-s", str(FAULT)], metrics=True) as proxy:
        url = f"{proxy.url}/sse/decide-fault?hang_after=6"
        read_events(url, 3, until=proxy.recorded_more(6))
        out, ids = curl(url, "-i", "-H", "Last-Event-ID: 3", stop_after=2)
        assert "sse-resume" not in out.lower()  # untouched: the upstream itself resumed from 3
        assert ids[:2] == ["4", "5"], out
        out, ids = curl(url, "-H", "accept: text/event-stream", "-H", "Last-Event-ID: 3", max_time=2)
        assert ids == ["4", "5", "6"], out  # the fault fired once: the next reconnect is served from history
        log = proxy.output
    assert log.count("internal error on request") == 1, log
    assert "mitmproxy has crashed" not in log

"""Client reconnection through a real mitmdump with the addon, a real upstream and real clients (curl, httpx)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness import ADDON, BIN, ClientDecoder, EventSourceClient, Mitmdump, Process, curl, numbers, read_events


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, upstream_port: int) -> Iterator[Mitmdump]:
    with Mitmdump(tmp_path_factory.mktemp("proxy"), upstream_port, metrics=True) as p:
        yield p


def consecutive(ns: list[int]) -> bool:
    return ns == list(range(ns[0], ns[0] + len(ns)))


# -- the task's scenarios ---------------------------------------------------------------------------------------


def test_curl_receives_1_2_3_then_resumes_with_4_5_6(proxy: Mitmdump) -> None:
    url = f"{proxy.url}/sse/scenario"
    _, first = curl(url, stop_after=3)
    assert first[:3] == ["1", "2", "3"]
    out, ids = curl(url, "-H", "Last-Event-Id: 3", stop_after=6)
    assert ids[:3] == ["4", "5", "6"], out
    assert [int(i) for i in ids] == list(range(4, 4 + len(ids))), out  # then the live stream, no gap, no repeat


def test_curl_with_ancient_id_is_served_and_told(proxy: Mitmdump) -> None:
    url = f"{proxy.url}/sse/ancient"
    curl(url, stop_after=2)
    out, ids = curl(url, "-i", "-H", "Last-Event-Id: ancient-id", stop_after=3)
    assert out.startswith("HTTP/1.1 200"), out
    assert "sse-resume: miss" in out.lower()
    body = out.split("\n\n", 1)[1]
    assert body.startswith(": sse-resume: Last-Event-ID unknown"), body
    assert ids[:3] == ["1", "2", "3"]  # the demo upstream starts again for an id it cannot read


def test_concurrent_clients_with_different_ids_each_get_their_events(proxy: Mitmdump) -> None:
    url = f"{proxy.url}/sse/concurrent"
    read_events(url, 12)
    clients = {last: EventSourceClient(url, last_event_id=str(last)) for last in (2, 5, 9)}
    import threading

    threads = [threading.Thread(target=c.run, args=(8,)) for c in clients.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for last, client in clients.items():
        ns = numbers(client.events)
        assert ns[:8] == list(range(last + 1, last + 9)), (last, ns, client.outcomes)


# -- upstreams that resume, ignore Last-Event-ID, or drop -------------------------------------------------------


def test_upstream_that_resumes(proxy: Mitmdump) -> None:
    url = f"{proxy.url}/sse/resumes"
    read_events(url, 3)
    client = EventSourceClient(url, last_event_id="3")
    assert numbers(client.run(5)) == [4, 5, 6, 7, 8]


def test_upstream_that_ignores_last_event_id_is_deduplicated(proxy: Mitmdump) -> None:
    url = f"{proxy.url}/sse/ignores?resume=0"
    _, got = read_events(url, 3, until=proxy.recorded_more(3))  # (the proxy must know 3 to drop 1-3 again)
    assert numbers(got) == [1, 2, 3]
    client = EventSourceClient(url, last_event_id="3")
    ns = numbers(client.run(5))
    assert ns == [4, 5, 6, 7, 8], (ns, client.outcomes)


def test_upstream_that_drops_every_few_events(proxy: Mitmdump) -> None:
    url = f"{proxy.url}/sse/drops?drop_after=3"
    client = EventSourceClient(url)
    ns = numbers(client.run(20))
    assert ns == list(range(1, 21)), (ns, client.outcomes)
    assert len(client.outcomes) >= 6  # it really did reconnect


def test_upstream_that_ignores_and_drops(proxy: Mitmdump) -> None:
    url = f"{proxy.url}/sse/ignores-drops?drop_after=4&resume=0"
    client = EventSourceClient(url)
    ns = numbers(client.run(4))
    assert ns == [1, 2, 3, 4]
    # Each reconnect restarts at 1: the proxy drops 1-4 as duplicates, and the stream never gets further
    # (this upstream never sends a fifth event). Nothing is repeated to the client.
    again = EventSourceClient(url, last_event_id="4")
    assert again.run(1, timeout=2, max_connections=3) == []
    assert again.outcomes and set(again.outcomes) == {"up-to-date"}, again.outcomes  # it was served, and got nothing


# -- replay from history ----------------------------------------------------------------------------------------


def test_replay_from_history_with_silent_upstream(proxy: Mitmdump, upstream_port: int) -> None:
    url = f"{proxy.url}/sse/silent?interval=0.01&hang_after=8&retry=1234"
    read_events(url, 3, until=proxy.recorded_more(8))  # the proxy sees 1-8 go by; the client takes only 1-3
    with httpx.Client() as client:
        before = len(client.get(f"http://127.0.0.1:{upstream_port}/requests").json())
        latencies = []
        for _ in range(5):
            start = time.monotonic()
            response = client.get(url, headers={"accept": "text/event-stream", "last-event-id": "3"})
            latencies.append(time.monotonic() - start)
            assert response.headers["sse-resume"] == "hit"
            body = response.content.decode()
            assert [json.loads(line[6:])["n"] for line in body.splitlines() if line.startswith("data: ")] == [
                4,
                5,
                6,
                7,
                8,
            ]
            assert body.endswith("retry: 50\n\n")
        after = len(client.get(f"http://127.0.0.1:{upstream_port}/requests").json())
    latencies.sort()
    print(
        f"\nreplay of 5 events, upstream silent: median {latencies[2] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms"
    )
    # Served from history alone: the silent upstream was not even asked (its next event would take an hour).
    assert after == before
    # The client comes back with 8: forwarded upstream, and its retry is what the upstream said, not 50.
    client2 = EventSourceClient(url, last_event_id="8")
    client2.run(1, timeout=3, max_connections=1)
    assert client2.outcomes == ["up-to-date"]
    assert client2.retry_ms == 1234


def test_large_events_are_replayed_byte_for_byte_from_compressed_history(proxy: Mitmdump) -> None:
    # Events of 3 KB: held compressed (sse_compress_events_from is 1 KiB by default), replayed as they came.
    url = f"{proxy.url}/sse/packed?interval=0.01&hang_after=6&pad=3000"
    _, first = read_events(url, 6, until=proxy.recorded_more(6))
    assert numbers(first) == [1, 2, 3, 4, 5, 6] and all(len(data) > 3000 for _, data in first)
    with httpx.Client(timeout=20) as client:
        response = client.get(url, headers={"accept": "text/event-stream", "last-event-id": "2"})
    assert response.headers["sse-resume"] == "hit"
    replayed = [(event.id, event.data) for event in ClientDecoder().feed(response.content)]  # httpx-sse's decoder
    assert replayed == first[2:]


def test_retry_restored_to_default_when_upstream_sent_none(proxy: Mitmdump) -> None:
    url = f"{proxy.url}/sse/default-retry?interval=0.01&hang_after=6"
    read_events(url, 2, until=proxy.recorded_more(6))
    first = EventSourceClient(url, last_event_id="2")
    first.run(100, timeout=3, max_connections=1)  # the whole replay response, to its end
    assert first.outcomes == ["hit"] and first.retry_ms == 50
    assert numbers(first.events) == [3, 4, 5, 6]
    again = EventSourceClient(url, last_event_id=first.last_event_id)
    again.run(1, timeout=2, max_connections=1)
    assert again.retry_ms == 3000


def test_inline_replay_for_clients_that_do_not_reconnect(proxy: Mitmdump) -> None:
    url = f"{proxy.url}/sse/inline?interval=0.05"
    read_events(url, 3, until=proxy.recorded_more(3))
    out, ids = curl(url, "-i", "-H", "Last-Event-Id: 2", stop_after=6, max_time=20)
    assert "sse-resume: hit; inline" in out.lower()
    assert [int(i) for i in ids] == list(range(3, 9)), out  # the replay, then the live stream, in one response


def test_several_reconnects_never_repeat_an_event(proxy: Mitmdump) -> None:
    url = f"{proxy.url}/sse/many?interval=0.02"
    seen: list[int] = []
    last = ""
    for _ in range(8):
        client = EventSourceClient(url, last_event_id=last)
        got = numbers(client.run(3, max_connections=1))
        assert got, client.outcomes  # (a replay response may hold fewer than 3, never none)
        seen += got
        last = client.last_event_id
    assert seen == list(range(1, len(seen) + 1))


# -- hostile input ----------------------------------------------------------------------------------------------


def raw_request(port: int, head: bytes) -> bytes:
    """Send ``head``; return the answer once it is whole (its head, and the first event of a 200's stream), or
    all of it if the proxy closes the connection first. (A read that never completes fails the test.)"""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        data = b""
        while not answered(data):
            got = s.recv(4096)
            if not got:
                break
            data += got
        return data


def answered(data: bytes) -> bool:
    head, end, body = data.partition(b"\r\n\r\n")
    return bool(end) and (not head.startswith(b"HTTP/1.1 200") or b"\n\n" in body)


@pytest.mark.parametrize(
    "value",
    [b"x" * 100_000, b"a\x00b", b"\xff\xfe\xc3(", b"a\rb", b"1\r\n\r\nGET /sse HTTP/1.1", b" 3 ", b"\x7f\x01"],
    ids=["100KB", "NUL", "invalid-utf8", "CR", "CRLF-smuggling", "spaces", "control"],
)
@pytest.mark.parametrize("header", [b"Last-Event-ID", b"mcp-session-id"])
def test_hostile_headers_are_handled_and_proxy_keeps_serving(proxy: Mitmdump, header: bytes, value: bytes) -> None:
    reply = raw_request(
        proxy.port,
        b"GET /sse/hostile HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n" + header + b": " + value + b"\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 "), reply[:200]  # an answer (200 and a stream, or 400), not a crash
    _, got = read_events(f"{proxy.url}/sse/after-hostile", 2)
    assert len(got) == 2
    assert "Traceback" not in proxy.output


# -- sessions and isolation -------------------------------------------------------------------------------------


def test_sessions_are_isolated(proxy: Mitmdump) -> None:
    url = f"{proxy.url}/sse/isolated?interval=0.01&hang_after=6"
    read_events(url, 2, headers={"mcp-session-id": "alice"}, until=proxy.recorded_more(6))
    alice = EventSourceClient(url, {"mcp-session-id": "alice"}, last_event_id="2")
    alice.run(1, max_connections=1)
    assert alice.outcomes == ["hit"]
    mallory = EventSourceClient(url, {"mcp-session-id": "bob"}, last_event_id="2")
    mallory.run(1, timeout=2, max_connections=1)
    assert mallory.outcomes == ["miss"]


def test_credentials_separate_histories_under_one_session_id(proxy: Mitmdump) -> None:
    url = f"{proxy.url}/sse/creds?interval=0.01&hang_after=6"
    read_events(url, 2, headers={"mcp-session-id": "s", "authorization": "Bearer alice"}, until=proxy.recorded_more(6))
    same = EventSourceClient(url, {"mcp-session-id": "s", "authorization": "Bearer alice"}, last_event_id="2")
    same.run(1, max_connections=1)
    other = EventSourceClient(url, {"mcp-session-id": "s", "authorization": "Bearer mallory"}, last_event_id="2")
    other.run(1, timeout=2, max_connections=1)
    assert (same.outcomes, other.outcomes) == (["hit"], ["miss"])


def test_logs_never_hold_payloads_or_credentials(proxy: Mitmdump) -> None:
    url = f"{proxy.url}/sse/secret?interval=0.01&hang_after=4"
    headers = {"authorization": "Bearer s3cr3t-token", "mcp-session-id": "sess-visible"}
    read_events(url, 2, headers=headers, until=proxy.recorded_more(4))
    EventSourceClient(url, {"authorization": "Bearer s3cr3t-token", "mcp-session-id": "sess-visible"}, "2").run(1)
    log = proxy.output
    assert "sse-resume: session" in log
    assert "s3cr3t-token" not in log and "sess-visible" not in log


# -- never in the way -------------------------------------------------------------------------------------------


def test_non_sse_traffic_is_untouched(proxy: Mitmdump) -> None:
    with httpx.Client() as client:
        direct = client.get(f"{proxy.url}/page")
    assert direct.status_code == 200 and b"EventSource" in direct.content
    assert "sse-resume" not in direct.headers


def test_compressed_request_gets_identity(proxy: Mitmdump, upstream_port: int) -> None:
    url = f"{proxy.url}/sse/identity?end_after=2"
    with httpx.Client() as client:
        client.get(url, headers={"accept": "text/event-stream", "accept-encoding": "gzip, br"})
        seen = client.get(f"http://127.0.0.1:{upstream_port}/requests").json()
    assert seen[-1]["accept-encoding"] == "identity"


def test_clean_end_of_stream_passes_everything(proxy: Mitmdump) -> None:
    with httpx.Client() as client:
        body = client.get(f"{proxy.url}/sse/end?end_after=3&interval=0.01").content
    assert body == b"".join(b'id: %d\ndata: {"n": %d}\n\n' % (n, n) for n in (1, 2, 3))


def test_crlf_stream_is_passed_byte_for_byte(proxy: Mitmdump) -> None:
    with httpx.Client() as client:
        body = client.get(f"{proxy.url}/sse/crlf?end_after=3&interval=0.01&crlf=1").content
    assert body == b"".join(b'id: %d\r\ndata: {"n": %d}\r\n\r\n' % (n, n) for n in (1, 2, 3))


def test_stale_policy_restart(tmp_path: Path, upstream_port: int) -> None:
    with Mitmdump(tmp_path, upstream_port, ["sse_stale_policy=restart"]) as p:
        out, ids = curl(f"{p.url}/sse/restart", "-i", "-H", "Last-Event-Id: 41", stop_after=2)
        assert "sse-resume: miss" in out.lower() and "restarted the stream" in out
        assert ids[:2] == ["1", "2"]


def test_ids_only_mode_forwards_and_deduplicates(tmp_path: Path, upstream_port: int) -> None:
    with Mitmdump(tmp_path, upstream_port, ["sse_support_replay=false"], metrics=True) as p:
        url = f"{p.url}/sse/ids-only?resume=0&interval=0.01&hang_after=8"
        read_events(url, 3, until=p.recorded_more(8))
        client = EventSourceClient(url, last_event_id="3")
        ns = numbers(client.run(5, max_connections=1))
        assert client.outcomes == ["behind"]
        assert ns == [4, 5, 6, 7, 8]  # from upstream (which restarted at 1): 1-3 dropped, nothing replayed


# (An option out of range, or of a bad kind, stopping mitmdump: test_options_e2e.py, one case of each kind.)


def test_bad_config_file_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "sse.yaml"
    config.write_text("sse:\n  client_resilience:\n    event_ttl: -5\n")
    proc = Process(
        [BIN / "mitmdump", "-s", ADDON, "--listen-port", "0", "--set", f"sse_config={config}"], tmp_path / "m.log"
    )
    try:
        assert proc.proc.wait(60) == 1
    finally:
        proc.stop()
    assert "sse_config: sse.event_ttl: Input should be greater than or equal to 1" in proc.output

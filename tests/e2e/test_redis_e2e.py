"""Several proxies, one history: two real mitmdumps share a real redis-server, and Redis dies and comes back."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness import (
    EventSourceClient,
    Mitmdump,
    RedisServer,
    curl,
    free_port,
    numbers,
    read_events,
    scrape,
    wait_port,
)


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory, upstream_port: int, redis: RedisServer
) -> Iterator[tuple[Mitmdump, Mitmdump]]:
    tmp = tmp_path_factory.mktemp("proxies")
    options = [f"sse_store={redis.url}", "sse_store_secret=shared by both"]
    with Mitmdump(tmp, upstream_port, options) as first, Mitmdump(tmp, upstream_port, options) as second:
        yield first, second


def test_reconnect_to_another_proxy_resumes_without_a_duplicate(pair: tuple[Mitmdump, Mitmdump]) -> None:
    first, second = pair
    path = "/sse/migrate"
    _, ids = curl(first.url + path, stop_after=3)
    assert ids[:3] == ["1", "2", "3"]
    out, ids = curl(second.url + path, "-H", "Last-Event-ID: 3", stop_after=3)
    assert ids[:3] == ["4", "5", "6"], out
    assert "id: 3\n" not in out


def test_replay_from_history_written_by_the_other_proxy(pair: tuple[Mitmdump, Mitmdump]) -> None:
    first, second = pair
    path = "/sse/replay-elsewhere?hang_after=6"
    read_events(first.url + path, 3, linger=0.5)  # 4-6 reach the first proxy, never this client
    time.sleep(0.3)  # written behind to Redis
    hit = httpx.get(second.url + path, headers={"accept": "text/event-stream", "last-event-id": "3"})
    assert hit.headers.get("sse-resume") == "hit"
    assert [line[4:] for line in hit.text.splitlines() if line.startswith("id: ")] == ["4", "5", "6"]
    # And the client comes back (to the first proxy, say) for the live stream, with nothing twice.
    client = EventSourceClient(first.url + path, last_event_id="6")
    assert client.run(1, timeout=5, max_connections=1) == [("7", '{"n": 7}')]  # resumed upstream after 6
    assert client.outcomes == ["up-to-date"]


def test_sessions_stay_apart_across_proxies(pair: tuple[Mitmdump, Mitmdump]) -> None:
    first, second = pair
    path = "/sse/apart?hang_after=6"
    read_events(first.url + path, 3, headers={"mcp-session-id": "alice"}, linger=0.5)
    time.sleep(0.3)
    out, _ = curl(second.url + path, "-i", "-H", "mcp-session-id: mallory", "-H", "Last-Event-ID: 3", max_time=1)
    assert "sse-resume: miss" in out.lower()  # mallory's session holds nothing, whatever alice's holds
    out, ids = curl(second.url + path, "-i", "-H", "mcp-session-id: alice", "-H", "Last-Event-ID: 3", max_time=1)
    assert "sse-resume: hit" in out.lower() and ids[:3] == ["4", "5", "6"], out  # while alice's reached this proxy


def test_redis_killed_mid_stream_and_restarted_streams_keep_flowing(tmp_path: Path, upstream_port: int) -> None:
    redis = RedisServer(tmp_path)
    restarted: list[RedisServer] = []
    metrics = free_port()
    try:
        options = [
            f"sse_store={redis.url}",
            "sse_store_timeout=100",
            "sse_store_secret=s",
            f"sse_metrics_port={metrics}",
        ]
        with (
            Mitmdump(tmp_path, upstream_port, options) as proxy,
            Mitmdump(tmp_path, upstream_port, options[:3]) as other,
        ):
            wait_port(metrics)
            client = EventSourceClient(f"{proxy.url}/sse/outage?interval=0.02")

            def outage() -> None:
                while len(client.events) < 20:
                    time.sleep(0.01)
                redis.kill()
                while len(client.events) < 60:
                    time.sleep(0.01)
                restarted.append(redis.restart())

            t = threading.Thread(target=outage)
            t.start()
            events = client.run(150, timeout=60)
            t.join()
            assert numbers(events) == list(range(1, 151))  # no gap, no repeat
            assert client.outcomes == [""]  # one response from start to end: Redis never cut the stream
            deadline = time.monotonic() + 10
            while scrape(metrics)["sse_resume_store_up"] != 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            values = scrape(metrics)
            assert values["sse_resume_store_up"] == 1
            assert values["sse_resume_store_failures_total"] >= 1
            # Written again once Redis was back: the other proxy finds recent events of the stream.
            time.sleep(0.5)
            last = client.last_event_id
            headers = {"accept": "text/event-stream", "last-event-id": str(int(last) - 5)}
            with httpx.stream("GET", f"{other.url}/sse/outage?interval=0.02", headers=headers) as hit:
                assert hit.headers.get("sse-resume") == "hit", hit.headers
            log = proxy.output
        assert log.count("unavailable") == 1, log  # one warning for the outage
        assert "is available" in log
        assert "Traceback" not in log
    finally:
        redis.stop()
        for r in restarted:
            r.stop()


def test_proxy_starts_and_serves_with_redis_down(tmp_path: Path, upstream_port: int) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with Mitmdump(tmp_path, upstream_port, [f"sse_store={dead}", "sse_store_timeout=100"]) as proxy:
        url = f"{proxy.url}/sse/down?hang_after=6"
        _, got = read_events(url, 3, linger=0.5)
        assert [i for i, _ in got] == ["1", "2", "3"]
        hit = httpx.get(url, headers={"accept": "text/event-stream", "last-event-id": "3"})
        assert hit.headers.get("sse-resume") == "hit"  # this proxy's own history still serves
        log = proxy.output
    assert "unavailable" in log and "Traceback" not in log
    assert "sse_store_secret is not set" in log

"""Several proxies, one history: two real mitmdumps share a real redis-server, and Redis dies and comes back."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
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
    wait_for,
    wait_port,
)

WRITES = "sse_resume_store_writes_total"


def written(proxy: Mitmdump, at_least: float) -> Callable[[], bool]:
    """The condition that ``proxy`` has written ``at_least`` events to Redis, and has none left to write."""
    return lambda: proxy.metric(WRITES) >= at_least and proxy.metric("sse_resume_store_queued") == 0


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
    with (
        Mitmdump(tmp, upstream_port, options, metrics=True) as first,
        Mitmdump(tmp, upstream_port, options, metrics=True) as second,
    ):
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
    # 4-6 reach the first proxy, never this client, which hangs up once the proxy has written all six to Redis.
    read_events(first.url + path, 3, until=written(first, first.metric(WRITES) + 6))
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
    before = first.metric(WRITES)
    read_events(first.url + path, 3, headers={"mcp-session-id": "alice"}, until=written(first, before + 6))
    out, _ = curl(second.url + path, "-i", "-H", "mcp-session-id: mallory", "-H", "Last-Event-ID: 3", stop_after=1)
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
            # The other proxy's lookup after the restart reconnects and sends the script again within its timeout:
            # a generous one, so that a busy machine cannot turn it into a miss (timeouts are tested apart).
            Mitmdump(tmp_path, upstream_port, [options[0], options[2], "sse_store_timeout=10000"]) as other,
        ):
            wait_port(metrics)
            client = EventSourceClient(f"{proxy.url}/sse/outage?interval=0.02")

            def outage() -> None:
                wait_for(lambda: len(client.events) >= 20, 60, "20 events before the outage", every=0.005)
                redis.kill()
                wait_for(lambda: len(client.events) >= 60, 60, "60 events before Redis is back", every=0.005)
                restarted.append(redis.restart())

            t = threading.Thread(target=outage)
            t.start()
            events = client.run(150, timeout=60)
            t.join()
            assert numbers(events) == list(range(1, 151))  # no gap, no repeat
            assert client.outcomes == [""]  # one response from start to end: Redis never cut the stream
            last = client.last_event_id

            def caught_up() -> dict[str, float]:
                """Redis is back, and every event recorded (the last one included) is written or given up."""
                v = scrape(metrics)
                done = v[WRITES] + v["sse_resume_store_dropped_writes_total"] >= v["sse_resume_events_recorded_total"]
                ok = v["sse_resume_store_up"] == 1 and v["sse_resume_store_queued"] == 0 and done
                return v if ok and v["sse_resume_events_recorded_total"] >= int(last) else {}

            values = wait_for(caught_up, 20, "the proxy to write what it recorded to the restarted Redis")
            assert values["sse_resume_store_failures_total"] >= 1
            # Written again once Redis was back: the other proxy finds recent events of the stream.
            headers = {"accept": "text/event-stream", "last-event-id": str(int(last) - 5)}
            with httpx.stream("GET", f"{other.url}/sse/outage?interval=0.02", headers=headers) as hit:
                if hit.headers.get("sse-resume") != "hit":
                    note = next(hit.iter_lines(), "")  # the note says why
                    raise AssertionError(f"{hit.headers.get('sse-resume')}: {note}\n{other.output}")
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
    with Mitmdump(tmp_path, upstream_port, [f"sse_store={dead}", "sse_store_timeout=100"], metrics=True) as proxy:
        url = f"{proxy.url}/sse/down?hang_after=6"
        # The client hangs up once the proxy has recorded 4-6 (this proxy serves nothing else).
        _, got = read_events(url, 3, until=lambda: proxy.metric("sse_resume_events_recorded_total") >= 6)
        assert [i for i, _ in got] == ["1", "2", "3"]
        hit = httpx.get(url, headers={"accept": "text/event-stream", "last-event-id": "3"})
        assert hit.headers.get("sse-resume") == "hit"  # this proxy's own history still serves
        log = proxy.output
    assert "unavailable" in log and "Traceback" not in log
    assert "sse_store_secret is not set" in log

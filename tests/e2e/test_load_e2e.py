"""Load: 500 concurrent SSE clients through one mitmdump, then all of them reconnecting at once.

Each client has its own session. It reads its stream up to its own cut point k (between 5 and 35 of 40 events),
stops reading and hangs up once the proxy has relayed all 40 (the rest were in flight to it, and are lost with
the connection). Then all 500 reconnect at the same moment with ``Last-Event-ID: k`` and must receive exactly
k+1..40 from the proxy's history: nothing missing, nothing twice, in order. The figures (events/s, peak RSS,
CPU) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from harness import Mitmdump, RawSSE, cpu_seconds, free_port, numbers, rss_kib, scrape, upstream, wait_port

CLIENTS = 500
EVENTS = 40
INTERVAL = 0.1  # per stream: 500 streams make 5,000 events/s through the proxy


def cut_point(i: int) -> int:
    return 5 + (i * 7) % 31


async def wait_recorded(metrics_port: int, at_least: float, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        recorded = (await asyncio.to_thread(scrape, metrics_port)).get("sse_resume_events_recorded_total", 0)
        if recorded >= at_least:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the proxy recorded {recorded} events, expected {at_least}")
        await asyncio.sleep(0.2)  # (polling a condition, with a deadline)


async def load(port: int, metrics_port: int, path: str) -> dict[str, float]:
    clients = [RawSSE() for _ in range(CLIENTS)]

    async def first(i: int, c: RawSSE) -> None:
        await c.open(port, path, {"accept": "text/event-stream", "mcp-session-id": f"load-{i}"})
        assert c.status == 200
        await c.read_until(lambda c: len(c.events) >= cut_point(i))

    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(first(i, c) for i, c in enumerate(clients))), 120)
    await wait_recorded(metrics_port, CLIENTS * EVENTS, 120)
    relayed_in = time.monotonic() - started
    for c in clients:
        c.abort()

    again = [RawSSE() for _ in range(CLIENTS)]

    async def reconnect(i: int, c: RawSSE) -> None:
        headers = {"accept": "text/event-stream", "mcp-session-id": f"load-{i}", "last-event-id": str(cut_point(i))}
        await c.open(port, path, headers)
        await c.read_all()

    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(reconnect(i, c) for i, c in enumerate(again))), 120)
    replayed_in = time.monotonic() - started

    for i, (c, before) in enumerate(zip(again, clients, strict=True)):
        k = cut_point(i)
        assert numbers(before.events) == list(range(1, k + 1))
        assert c.headers.get("sse-resume") == "hit", (i, c.status, c.headers)
        got = numbers(c.events)
        assert got == list(range(k + 1, EVENTS + 1)), (i, got)
    replayed = sum(len(c.events) for c in again)
    return {
        "relayed_events": CLIENTS * EVENTS,
        "relayed_events_per_s": CLIENTS * EVENTS / relayed_in,
        "replayed_events": replayed,
        "replayed_events_per_s": replayed / replayed_in,
        "reconnect_all_s": replayed_in,
    }


def test_500_clients_then_all_reconnect_at_once(tmp_path: Path) -> None:
    metrics_port = free_port()
    with (
        upstream(tmp_path, interval=INTERVAL) as up,
        Mitmdump(tmp_path, up, [f"sse_metrics_port={metrics_port}"]) as proxy,
    ):
        wait_port(metrics_port)
        pid = proxy.proc.pid
        rss_before = rss_kib(pid)
        cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
        figures = asyncio.run(load(proxy.port, metrics_port, f"/sse/load?count={EVENTS}"))
        cpu = (cpu_seconds(pid) - cpu_before) / (time.monotonic() - wall_before)
        peak = rss_kib(pid, "VmHWM")
        assert proxy.proc.poll() is None
        assert "Traceback" not in proxy.output
    print(
        f"\nload: {CLIENTS} clients, {figures['relayed_events']} events relayed at "
        f"{figures['relayed_events_per_s']:.0f} events/s (paced by the upstream); all reconnected at once: "
        f"{figures['replayed_events']} events replayed in {figures['reconnect_all_s']:.2f} s "
        f"({figures['replayed_events_per_s']:.0f} events/s); mitmdump RSS {rss_before / 1024:.0f} MiB at start, "
        f"peak {peak / 1024:.0f} MiB; CPU {cpu:.0%} of one core over the test"
    )

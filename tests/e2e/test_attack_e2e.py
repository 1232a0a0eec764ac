"""Memory under attack, measured on a real mitmdump: invented sessions, huge events, endless lines, a trickle.

All at once, against one proxy with a 32 MiB history cap: 4,000 (or 100,000) requests each inventing a session
id (half of them also with an invented Last-Event-ID), events of 4 MiB (above ``sse_max_event_bytes``), a 64 MiB
line that never ends, and an upstream that sends one byte per write. Meanwhile a well-behaved client keeps
resuming. The proxy's RSS is sampled throughout. It must stay within the history cap plus a fixed allowance for
the interpreter and mitmproxy's own buffers; every hostile body must arrive byte for byte; the good client must be
served correctly every time.

The proxy keeps at most a tenth of the invented sessions (``sse_max_sessions``), so the session cap is exceeded
tenfold. CI invents 4,000 (mitmproxy turns over about 100-200 flows a second here, and CI has a time budget:
10,000 took 140 s of a loaded run, the longest test of the suite);
``SSE_ATTACK_SESSIONS=100000 ./dev test tests/e2e/test_attack_e2e.py -s`` runs the full-size attack.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from harness import Mitmdump, RawSSE, RssSampler, free_port, rss_kib, scrape, upstream, wait_port

SESSIONS = int(os.environ.get("SSE_ATTACK_SESSIONS", "4000"))
MAX_SESSIONS = max(SESSIONS // 10, 1)
CONNECTIONS = 32
CAP = 32 * 1024 * 1024
MAX_EVENT = 256 * 1024
ALLOWANCE_MIB = 64  # interpreter, mitmproxy's per-connection buffers, allocator slack: measured ~20-40 MiB


async def flood(port: int, count: int) -> int:
    """``count`` SSE requests, each with a new session id, over a few keep-alive connections."""
    served = 0
    todo = iter(range(count))

    async def connection() -> None:
        nonlocal served
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in todo:
                extra = f"Last-Event-ID: ancient-{i}\r\n" if i % 2 else ""
                writer.write(
                    f"GET /sse/flood?end_after=1&interval=0 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
                    f"Mcp-Session-Id: invented-{i}\r\n{extra}\r\n".encode()
                )
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200"), head
                while (size := int(await reader.readuntil(b"\r\n"), 16)) != 0:
                    await reader.readexactly(size + 2)
                await reader.readexactly(2)
                served += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
    return served


async def body_digest(port: int, path: str) -> tuple[int, str]:
    """Read a whole response body; return its length and SHA-256."""
    c = RawSSE()
    await c.open(port, path, {"accept": "text/event-stream"})
    h = hashlib.sha256()
    size = 0
    while not c.ended:
        data = await c.read_chunk()
        h.update(data)
        size += len(data)
    return size, h.hexdigest()


def expected(events: range, pad: int = 0, endless: int = 0) -> tuple[int, str]:
    """What the demo upstream sends for these knobs (see recipes/demo_upstream.py)."""
    body = b"z" * endless
    for n in events:
        data = json.dumps({"n": n, "pad": "x" * pad} if pad else {"n": n})
        body += f"id: {n}\ndata: {data}\n\n".encode()
    return len(body), hashlib.sha256(body).hexdigest()


async def good_client(port: int, stop: asyncio.Event) -> int:
    """Resume again and again while the attack runs: 1-3 taken, then exactly 4, 5, 6 from the proxy."""
    rounds = 0
    while not stop.is_set() or rounds < 3:
        path = f"/sse/good-{rounds}?hang_after=6&interval=0.02"
        first = RawSSE()
        await first.open(port, path, {"accept": "text/event-stream"})
        # All six reach the client, which dies having handled only 1-3: 4-6 are lost with the connection. (Once
        # the client has them the proxy has relayed them, and it records what it relayed before it looks up a
        # resume: a condition, where a pause for the recording would be a guess.)
        await first.read_until(lambda c: len(c.events) >= 6)
        first.abort()
        again = RawSSE()
        await again.open(port, path, {"accept": "text/event-stream", "last-event-id": "3"})
        await again.read_all()
        assert again.headers.get("sse-resume") == "hit"
        assert [e[0] for e in again.events] == ["4", "5", "6"], again.events
        rounds += 1
        await asyncio.sleep(1)  # the client's pace: a round a second while the attack runs, not a wait
    return rounds


async def attack(port: int) -> dict[str, object]:
    stop = asyncio.Event()
    good = asyncio.create_task(good_client(port, stop))
    hostile = asyncio.gather(
        body_digest(port, "/sse/huge?pad=4194304&end_after=5&interval=0"),
        body_digest(port, "/sse/endless?endless=67108864&end_after=3&interval=0"),
        body_digest(port, "/sse/trickle?trickle=1&end_after=20&interval=0"),
    )
    served = await flood(port, SESSIONS)
    huge, endless, trickle = await hostile
    stop.set()
    rounds = await good
    assert huge == expected(range(1, 6), pad=4194304)
    assert endless == expected(range(1, 4), endless=67108864)
    assert trickle == expected(range(1, 21))
    return {"served": served, "good_rounds": rounds}


@pytest.mark.timeout(300 + SESSIONS // 50)  # ~200 flows/s
def test_memory_stays_within_caps_under_attack(tmp_path: Path) -> None:
    metrics_port = free_port()
    options = [
        f"sse_max_history_bytes={CAP}",
        f"sse_max_event_bytes={MAX_EVENT}",
        f"sse_max_sessions={MAX_SESSIONS}",
        f"sse_metrics_port={metrics_port}",
    ]
    with upstream(tmp_path, interval=0.05) as up, Mitmdump(tmp_path, up, options) as proxy:
        wait_port(metrics_port)
        pid = proxy.proc.pid
        baseline = rss_kib(pid)
        sampler = RssSampler(pid)
        started = time.monotonic()
        try:
            result = asyncio.run(attack(proxy.port))
        finally:
            peak = sampler.stop()
        took = time.monotonic() - started
        metrics = scrape(metrics_port)
        assert proxy.proc.poll() is None
        log = proxy.output
    evictions = {k.split('"')[1]: int(v) for k, v in metrics.items() if k.startswith("sse_resume_evictions_total")}
    print(
        f"\nattack: {result['served']} invented sessions in {took:.0f} s, hostile bodies intact, good client served "
        f"{result['good_rounds']} times; RSS {baseline / 1024:.0f} MiB before, peak {peak / 1024:.0f} MiB "
        f"(+{(peak - baseline) / 1024:.0f} MiB; history cap {CAP >> 20} MiB); history at the end: "
        f"{metrics['sse_resume_sessions']:.0f} sessions, {metrics['sse_resume_history_bytes'] / 2**20:.1f} MiB; "
        f"evictions by reason {evictions}"
    )
    assert result["served"] == SESSIONS
    assert metrics["sse_resume_history_bytes"] <= CAP
    assert metrics["sse_resume_sessions"] <= MAX_SESSIONS
    assert evictions["session-lru"] + evictions["bytes"] > 0
    assert (peak - baseline) / 1024 <= (CAP >> 20) + ALLOWANCE_MIB
    assert "Traceback" not in log and "crashed" not in log

"""What keep mode queues for clients that do not read is bounded for all of them together, on a real mitmdump.

A kept stream queues events for its client up to the client's share of ``sse_keep_max_queued_bytes``: 8 times
``sse_max_event_bytes`` (8 MiB) at most, less as clients are added, never less than 256 KiB. Past its share a
client's response ends at an event boundary, "too slow" (it resumes from history), and what was queued for it counts
until it is taken or dropped. Measured before this bound: 60 clients that never read added 540 MiB, 8 MiB each.

Here 60 such clients, each on a kept stream of its own that sends 64 KiB events as fast as it can, against a bound
of 64 MiB: the proxy's RSS must stay within the bound, plus the history's own cap, plus an allowance for what so
many fast streams cost anyway; and every client's response must have ended, "too slow", so that its kept stream
went on without it to its bounds. (Plain
mode queues nothing of the addon's: mitmproxy reads an upstream no faster than the client takes it.)
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import Mitmdump, RssSampler, rss_kib, upstream, wait_for

CLIENTS = 60
MAX_QUEUED = 64 << 20
HISTORY = 32 << 20
PAD = 64 * 1024
# What 60 fast streams cost besides their queues (their upstream reads and parsers, mitmproxy's 120 connections
# and flows, allocator slack): measured at 130-150 MiB, whatever the bound (+154 MiB with a bound of 1 MiB, and
# +630 MiB before the bound, of which 480 MiB queued).
ALLOWANCE_MIB = 160
OPTIONS = [
    "sse_keep_upstream=true",
    f"sse_keep_max_queued_bytes={MAX_QUEUED}",
    f"sse_max_history_bytes={HISTORY}",
    "sse_keep_grace=120",  # what is queued for a client that was too slow waits for it this long
    "sse_keep_max_bytes=1048576",  # then its kept stream reads 1 MiB more without it, and stops
    "sse_transcript_bytes=0",  # (each flow's transcript is bounded on its own: not what is measured)
]


@contextlib.contextmanager
def non_readers(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` SSE requests, each on its own connection and stream; none reads a byte of its response."""
    socks: list[socket.socket] = []
    try:
        for i in range(count):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # (kernel buffers are not RSS anyway)
            s.connect(("127.0.0.1", port))
            path = f"/sse/queued-{i}?pad={PAD}&interval=0"
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


@pytest.mark.timeout(400)
def test_what_keep_mode_queues_for_clients_that_do_not_read_stays_within_its_bound(tmp_path: Path) -> None:
    with upstream(tmp_path) as up, Mitmdump(tmp_path, up, OPTIONS) as proxy:
        pid = proxy.proc.pid
        baseline = rss_kib(pid)
        sampler = RssSampler(pid, period=0.05)
        try:
            with non_readers(proxy.port, CLIENTS):
                ended = wait_for(
                    lambda: proxy.output.count("client away and the kept stream reached its bounds") >= CLIENTS,
                    300,
                    lambda: f"{CLIENTS} kept streams past their client ({proxy.output.count('reached its bounds')})",
                )
                assert ended
        finally:
            peak = sampler.stop()
        log = proxy.output
    added = (peak - baseline) / 1024
    print(
        f"\n{CLIENTS} keep-mode clients that never read, bound {MAX_QUEUED >> 20} MiB: RSS {baseline / 1024:.0f} MiB "
        f"before, peak +{added:.0f} MiB (history cap {HISTORY >> 20} MiB)"
    )
    assert added <= (MAX_QUEUED >> 20) + (HISTORY >> 20) + ALLOWANCE_MIB
    assert "Traceback" not in log

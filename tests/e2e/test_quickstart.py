"""The README's first command, as a newcomer runs it: ./dev demo, then curl through the proxy."""

from __future__ import annotations

import socket
from pathlib import Path

from harness import ROOT, Process, curl, free_port, wait_for, wait_port


def test_dev_demo_serves_numbered_events_and_cleans_up(tmp_path: Path) -> None:
    upstream_port = free_port()
    proxy_port = free_port()
    demo = Process(
        [ROOT / "dev", "demo", "--listen-host", "127.0.0.1", "--listen-port", str(proxy_port)],
        tmp_path / "demo.log",
        env={"SSE_DEMO_UPSTREAM_PORT": str(upstream_port)},
    )
    try:
        wait_port(upstream_port, demo.proc, timeout=120)
        wait_port(proxy_port, demo.proc, timeout=120)
        # The port opens before mitmproxy's own addons have all started: wait for the line it logs once they have.
        wait_for(lambda: "listening at" in demo.output, 60, "mitmdump's 'listening at' line")
        # curl -N, as the README has it; five events, however long a loaded machine takes to send them.
        out, ids = curl(f"http://127.0.0.1:{proxy_port}/sse", stop_after=5, max_time=60)
        assert ids[:5] == ["1", "2", "3", "4", "5"], out
    finally:
        demo.stop()
    # Both the proxy and the demo upstream go, and their ports with them.
    wait_for(lambda: not any(listening(port) for port in (upstream_port, proxy_port)), 20, "the demo's ports to close")


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True

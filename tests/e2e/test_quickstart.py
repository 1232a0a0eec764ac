"""The README's first command, as a newcomer runs it: ./dev demo, then curl through the proxy."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from harness import ROOT, Process, free_port, wait_port


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
        out = subprocess.run(
            ["curl", "-sN", "--max-time", "3", f"http://127.0.0.1:{proxy_port}/sse"],
            capture_output=True,
            check=False,
        ).stdout.decode()
        ids = [int(n) for n in re.findall(r"^id: (\d+)$", out, re.M)]
        assert ids[:3] == [1, 2, 3], out
        assert ids == list(range(1, len(ids) + 1))
        assert 3 <= len(ids) <= 20  # "a few per second", for about three seconds
    finally:
        demo.stop()
    time.sleep(0.2)
    for port in (upstream_port, proxy_port):  # both the proxy and the demo upstream are gone
        with pytest.raises(OSError):
            wait_port(port, timeout=0.3)

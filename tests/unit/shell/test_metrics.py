"""The Prometheus endpoint (addon/sse_resume_shell/_metrics.py), in process: served on 127.0.0.1 while
``sse_metrics_port`` asks for one, moved and stopped with the option, a port it cannot have refused. (What the
counters say is in test_counters.py.)"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

from shell_harness import Addon, relay_through, sse_flow
from sse_resume_shell import SSEMetrics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def refused(port: int) -> bool:
    try:
        scrape(port)
    except (urllib.error.URLError, ConnectionError):
        return True
    return False


def test_the_endpoint_serves_the_counters_moves_with_the_option_and_stops_at_the_end() -> None:
    addon = Addon()
    first, second = free_port(), free_port()
    with taddons.context(addon) as tctx:
        assert refused(first)
        tctx.configure(addon, sse_metrics_port=first)
        relay_through(addon, sse_flow(), [b"id: 1\ndata: a\n\n"])
        served = scrape(first)
        assert "sse_resume_events_recorded_total 1.0" in served
        tctx.configure(addon, sse_metrics_port=second)
        assert refused(first) and "sse_resume_" in scrape(second)
        tctx.configure(addon, sse_event_ttl=60)  # another option: the same endpoint, not restarted
        assert "sse_resume_" in scrape(second)
        tctx.configure(addon, sse_metrics_port=0)
        assert refused(second)
        tctx.configure(addon, sse_metrics_port=first)
        next(a for a in addon.addons if isinstance(a, SSEMetrics)).done()
        assert refused(first)


def test_a_port_it_cannot_listen_on_is_an_option_error_naming_it() -> None:
    addon = Addon()
    with socket.socket() as taken, taddons.context(addon) as tctx:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(exceptions.OptionsError, match=f"sse_metrics_port: cannot listen on 127.0.0.1:{port}"):
            tctx.configure(addon, sse_metrics_port=port)

"""The baseline of the relay benchmarks: mitmproxy streaming SSE with nothing else done (``stream = True``)."""

from __future__ import annotations

from mitmproxy import http


def responseheaders(flow: http.HTTPFlow) -> None:
    if flow.response is not None and flow.response.headers.get("content-type", "").startswith("text/event-stream"):
        flow.response.stream = True

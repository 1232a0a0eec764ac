"""MCP rules, in process: protocol versions as data, the legacy transport, and the session lifecycle."""

from __future__ import annotations

import asyncio

import pytest
from mitmproxy.test import taddons, tutils

from shell_harness import Addon, respond, run, sse_flow
from sse_resume_core._mcp import PROTOCOL_VERSIONS, treatment


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (None, "serve"),
        ("", "serve"),
        ("2024-11-05", "pass"),
        ("2025-03-26", "serve"),
        ("2025-06-18", "serve"),
        ("2025-11-25", "serve"),
        ("2026-01-01", "serve"),  # between known versions: the rule of the one before
        ("2026-07-28", "pass"),
        ("2027-03-01", "pass"),  # a future version inherits the newest rule
        ("2024-01-01", "serve"),
        (" 2026-07-28 ", "pass"),
    ],
)
def test_protocol_versions(version: str | None, expected: str) -> None:
    assert treatment(version) == expected


def test_versions_are_data(monkeypatch: pytest.MonkeyPatch) -> None:
    # A new version is one line in the table: it rules that version and those after it, nothing before.
    monkeypatch.setitem(PROTOCOL_VERSIONS, "2027-01-01", "serve")
    assert (treatment("2027-01-01"), treatment("2027-06-01")) == ("serve", "serve")
    assert (treatment("2026-07-28"), treatment("2026-12-31")) == ("pass", "pass")


def test_version_without_resumption_passes_untouched() -> None:
    addon = Addon()
    with taddons.context(addon):
        flow = sse_flow(last_event_id="7")
        flow.request.headers["mcp-protocol-version"] = "2026-07-28"
        flow.request.headers["accept-encoding"] = "gzip"
        asyncio.run(addon.request(flow))
        assert flow.request.headers["last-event-id"] == "7" and flow.request.headers["accept-encoding"] == "gzip"
        respond(addon, flow)
        assert flow.response is not None and callable(stream := flow.response.stream)
        chunk = b"id: 1\ndata: x\n\n"
        assert stream(chunk) == chunk  # streamed as it came, copied into the flow's transcript, not interpreted
        addon.response(flow)
    assert addon.store.snapshot().events == 0 and flow.metadata["sse_resume"]["outcome"] == "passed"


def test_legacy_http_sse_stream_passes_untouched() -> None:
    addon = Addon()
    legacy = b"event: endpoint\r\ndata: /messages/?session_id=abc\r\n\r\n"
    with taddons.context(addon):
        flow = sse_flow("/sse")
        asyncio.run(addon.request(flow))
        respond(addon, flow)
        outs = run([legacy[:10], legacy[10:], b"event: message\r\ndata: {}\r\n\r\n", b""], flow)
        addon.response(flow)
    assert b"".join(o for o in outs if isinstance(o, bytes)) == legacy + b"event: message\r\ndata: {}\r\n\r\n"
    assert addon.store.snapshot().stored == 0
    assert flow.metadata["sse_resume"]["passthrough"].startswith("legacy MCP HTTP+SSE")


@pytest.mark.parametrize(
    ("method", "status", "dropped"),
    [("DELETE", 200, True), ("DELETE", 405, False), ("GET", 404, True), ("POST", 404, True), ("GET", 500, False)],
)
def test_session_lifecycle(method: str, status: int, dropped: bool) -> None:
    addon = Addon()
    with taddons.context(addon):
        flow = sse_flow("/mcp")
        flow.request.headers["mcp-session-id"] = "abc"
        asyncio.run(addon.request(flow))
        respond(addon, flow)
        run([b"id: 1\ndata: a\n\n", b""], flow)
        addon.response(flow)
        assert addon.store.snapshot().sessions == 1
        end = sse_flow("/mcp")
        end.request.method = method
        end.request.headers["mcp-session-id"] = "abc"
        end.response = tutils.tresp(status_code=status, content=b"")
        addon.response(end)
    assert addon.store.snapshot().sessions == (0 if dropped else 1)


def test_priming_event_is_a_position_and_streams_stay_apart() -> None:
    from sse_resume_core import HistoryLimits, MemoryHistory
    from sse_resume_core._resume import Resumer

    r = Resumer(MemoryHistory(HistoryLimits()))
    post = r.open(asyncio.run(r.decide("s", None)))
    post.feed(b"id: post-1\ndata:\n\n")  # the priming event of a POST stream (2025-11-25): an id, empty data
    post.feed(b'id: post-2\ndata: {"progress": 1}\n\n')
    get = r.open(asyncio.run(r.decide("s", None)))
    get.feed(b"id: get-1\ndata:\n\n")
    get.feed(b'id: get-2\ndata: {"note": 1}\n\n')
    after_priming = asyncio.run(r.decide("s", "post-1"))
    assert after_priming.outcome == "hit" and [e.id for e in after_priming.replay] == ["post-2"]
    assert asyncio.run(r.decide("s", "get-1")).replay[0].id == "get-2"
    primed_only = r.open(asyncio.run(r.decide("s", None)))
    primed_only.feed(b"id: post-9\ndata:\n\n")
    assert asyncio.run(r.decide("s", "post-9")).outcome == "up-to-date"

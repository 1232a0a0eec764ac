"""The end of an MCP session (addon/sse_resume_shell/_sessions.py): which responses drop its history."""

from __future__ import annotations

import asyncio

import pytest
from mitmproxy.test import taddons, tutils

from shell_harness import Addon, respond, run, sse_flow


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

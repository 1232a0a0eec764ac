"""Fault injection in process, for the unit tests: the resume addons and SSEFaults as addon/sse_resume.py lists
them, a stand-in for mitmproxy's proxyserver, and the events the tests send."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from mitmproxy.http import HTTPFlow
from mitmproxy.test import taddons, tflow, tutils

from shell_harness import Addon
from sse_resume_shell import SSEFaults

EVENTS = [b'id: %d\ndata: {"n": %d}\n\n' % (n, n) for n in range(1, 13)]


class Proxyserver:
    """Stands in for mitmproxy's proxyserver: one connection handler per client id, recording closes."""

    def __init__(self) -> None:
        self.connections: dict[str, Handler] = {}

    def connect(self, flow: HTTPFlow) -> Handler:
        handler = self.connections.setdefault(flow.client_conn.id, Handler(flow.client_conn))
        return handler


class Handler:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.transports = {client: object()}
        self.closed: list[Any] = []

    def close_connection(self, connection: Any, half_close: bool = False) -> None:
        self.closed.append(connection)


def sse_response(flow: HTTPFlow, status: int = 200) -> None:
    flow.response = tutils.tresp(content=None, status_code=status)
    flow.response.headers["content-type"] = "text/event-stream"


def script_addons() -> tuple[Any, SSEFaults]:
    """A fresh pair as addon/sse_resume.py lists them: SSEResume, then the faults, hooked up to its flows."""
    resume = Addon()
    return resume, SSEFaults(flow_state=resume.shell.flows.get)


@contextlib.contextmanager
def running(**options: Any) -> Iterator[tuple[taddons.context, Any, SSEFaults, Proxyserver]]:
    resume, faults = script_addons()
    server = Proxyserver()
    with taddons.context(resume, faults, server) as tctx:
        tctx.configure(faults, **options)
        yield tctx, resume, faults, server


def open_stream(resume: Any, faults: SSEFaults, server: Proxyserver | None, path: str = "/sse") -> HTTPFlow:
    flow = tflow.tflow()
    flow.request.path = path
    flow.request.headers["accept"] = "text/event-stream"
    if server is not None:
        server.connect(flow)
    asyncio.get_running_loop()  # (hooks run inside mitmproxy's loop)
    sse_response(flow)
    resume.responseheaders(flow)
    faults.responseheaders(flow)
    return flow


def send(flow: HTTPFlow, chunks: list[bytes]) -> list[bytes]:
    assert flow.response is not None and callable(flow.response.stream)
    out: list[bytes] = []
    for chunk in chunks:
        result = flow.response.stream(chunk)
        assert result != b"" or chunk == b"", "an empty bytes return ends an HTTP/1 response"
        out += [result] if isinstance(result, bytes) else list(result)
    return out

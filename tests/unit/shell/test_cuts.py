"""Cuts and the commands of fault injection (addon/sse_resume_shell/_cuts.py), in process, with the SSEResume addon
in front as the script lists them (the helpers are fault_harness.py's)."""

from __future__ import annotations

import asyncio

import pytest
from mitmproxy import exceptions
from mitmproxy.test import tflow

from fault_harness import EVENTS, open_stream, running, send, sse_response
from sse_resume_shell import MARKS


def test_sse_cut_cuts_the_open_sse_streams_given_once_per_connection() -> None:
    async def scenario() -> None:
        with running() as (tctx, resume, faults, server):
            a = open_stream(resume, faults, server)
            b = open_stream(resume, faults, server)
            b.client_conn = a.client_conn  # two streams on one (HTTP/2) connection
            c = open_stream(resume, faults, server)
            plain = tflow.tflow(resp=True)
            answer = tctx.master.commands.call("sse.cut", [a, plain])
            assert answer.startswith("cut the client connections of 2 SSE streams (")
            assert server.connections[a.client_conn.id].closed == [a.client_conn]
            assert server.connections[c.client_conn.id].closed == []
            assert a.marked == b.marked == MARKS["cut"] and not c.marked
            assert a.comment == "sse-resume fault: client connection cut (command sse.cut)"
            assert (
                b.comment
                == f"sse-resume fault: client connection cut (command sse.cut, on the connection of flow {a.id[:8]})"
            )
            faults.error(a)  # (its stream has ended)
            assert tctx.master.commands.call("sse.cut", [a]) == "no open SSE stream among the 1 flow given: nothing cut"
            assert faults.injected["cut"] == 2

    asyncio.run(scenario())


def test_sse_cut_session_takes_a_key_prefix_or_the_session_header() -> None:
    async def scenario() -> None:
        with running() as (tctx, resume, faults, server):
            flows = []
            for session in ("one", "one", "two"):
                flow = tflow.tflow()
                flow.request.path = "/mcp"
                flow.request.headers["accept"] = "text/event-stream"
                flow.request.headers["mcp-session-id"] = session
                server.connect(flow)
                await resume.request(flow)
                sse_response(flow)
                resume.responseheaders(flow)
                faults.responseheaders(flow)
                flows.append(flow)
            answer = tctx.master.commands.call("sse.cut.session", "one")
            assert answer.startswith("cut the client connections of 2 SSE streams")
            assert [bool(server.connections[f.client_conn.id].closed) for f in flows] == [True, True, False]
            key = resume.shell.flows[flows[2].id].session
            assert tctx.master.commands.call("sse.cut.session", key[:6]).startswith("cut the client connection of 1")
            with pytest.raises(exceptions.CommandError, match="no open SSE stream of a session 'nobody'"):
                tctx.master.commands.call("sse.cut.session", "nobody")
            with pytest.raises(exceptions.CommandError, match="name a session"):
                tctx.master.commands.call("sse.cut.session", " ")

    asyncio.run(scenario())


def test_sse_faults_says_what_is_scheduled_and_done() -> None:
    async def scenario() -> None:
        with running(sse_fault_repeat_after=1, sse_fault_filter="~u /sse") as (tctx, resume, faults, server):
            flow = open_stream(resume, faults, server)
            send(flow, EVENTS[:2])
            assert tctx.master.commands.call("sse.faults") == (
                "scheduled: sse_fault_repeat_after=1, sse_fault_filter=~u /sse; 1 open SSE stream (1 following the "
                "schedules); injected so far: 0 cuts, 0 stalls, 2 repeats"
            )

    asyncio.run(scenario())

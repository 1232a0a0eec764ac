"""Cutting SSE streams' client connections: on a schedule (for SSEFaults) and by command (``sse.cut``,
``sse.cut.session``), and the ``sse.faults`` command that says what is scheduled and what was injected."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mitmproxy import command, ctx, exceptions
from mitmproxy import flow as mflow

from sse_resume_core._logsafe import safe_traceback
from sse_resume_shell._faultstream import Stream, _said_cut, show
from sse_resume_shell._inject import Fault

if TYPE_CHECKING:
    from sse_resume_shell._faults import SSEFaults

__all__ = ["SSECuts"]

log = logging.getLogger("sse_resume.faults")


class SSECuts:
    """The cuts and the commands of fault injection, for the open streams of ``faults`` (whose child it is)."""

    def __init__(self, faults: SSEFaults) -> None:
        self.faults = faults
        self._cannot_cut = False  # said once: this mitmproxy has no connection handler to close

    def timed_cut(self, flow_id: str, seconds: int) -> None:
        try:
            stream = self.faults.streams.get(flow_id)
            if stream is not None:
                self.cut_streams([stream], f"sse_fault_cut_every={seconds}")
        except Exception as e:
            log.error("sse-resume: internal error cutting %s\n%s", flow_id, safe_traceback(e))

    def cut_streams(self, streams: list[Stream], by: str) -> list[Stream]:
        """Cut each stream's client connection (once per connection); the streams that broke."""
        broken: list[Stream] = []
        for stream in streams:
            if stream.cut is None and (made := self.cut(stream, stream.fault(by))):
                broken += made
        return broken

    def cut(self, stream: Stream, fault: Fault) -> list[Stream]:
        """Close the stream's client connection now; the streams that broke (every open one of that connection;
        none when it is gone already)."""
        client_id = stream.flow.client_conn.id
        handler = self.handler(client_id)
        if handler is None or stream.cut is not None:
            return []
        others = [s for s in self.faults.streams.values() if s.flow.client_conn.id == client_id and s.cut is None]
        broken = [stream, *(s for s in others if s is not stream)]
        for s in broken:
            s.cut = fault if s is stream else s.fault(f"{fault.by}, on the connection of flow {stream.flow.id[:8]}")
            s.last = "cut"
            if s.injector is not None:
                s.injector.done = True  # nothing more is sent
            self.faults.injected["cut"] += 1
            self.faults.annotate(s)
            log.info(
                "sse-resume: fault: cut the client connection of flow %s%s (%s)",
                s.flow.id[:8],
                f" after {s.cut.events} events" if s.cut.events else "",
                s.cut.by,
            )
        handler.close_connection(handler.client)
        show([s.flow for s in broken])
        return broken

    def handler(self, client_id: str) -> Any:
        """mitmproxy's handler of a live client connection (None when it is gone). Not a documented API: where a
        mitmproxy lacks it, that is said once, and nothing is cut."""
        server = ctx.master.addons.get("proxyserver")  # type: ignore[no-untyped-call]
        connections = getattr(server, "connections", None)
        if not isinstance(connections, dict):
            if not self._cannot_cut:
                self._cannot_cut = True
                log.warning("sse-resume: this mitmproxy keeps no table of connections: streams cannot be cut")
            return None
        handler = connections.get(client_id)
        client = getattr(handler, "client", None)
        if handler is None or not hasattr(handler, "close_connection") or client not in handler.transports:
            return None
        return handler

    # -- commands --------------------------------------------------------------------------------------------

    @command.command("sse.cut")  # type: ignore[untyped-decorator]
    def cut_command(self, flows: Sequence[mflow.Flow]) -> str:
        """Cut the client connections of these open SSE streams now, as a network failure would: each client sees
        its connection break and reconnects with Last-Event-ID. (On HTTP/2, every stream of the connection.)"""
        streams = [self.faults.streams[f.id] for f in flows if f.id in self.faults.streams]
        broken = self.cut_streams(streams, "command sse.cut")
        if not broken:
            n = len(flows)
            return f"no open SSE stream among the {n} flow{'s' if n != 1 else ''} given: nothing cut"
        return _said_cut(broken)

    @command.command("sse.cut.session")  # type: ignore[untyped-decorator]
    def cut_session_command(self, session: str) -> str:
        """Cut the client connections of every open SSE stream of one session now: a session key or its first
        characters (as sse.sessions shows them), or the value of the session header (as Mcp-Session-Id)."""
        wanted = session.strip()
        if not wanted:
            raise exceptions.CommandError("name a session: its key as sse.sessions shows it, or its session header")
        header = getattr(ctx.options, "sse_session_header", "mcp-session-id")
        streams = [s for s in self.faults.streams.values() if s.flow.request.headers.get(header) == wanted]
        if not streams:
            keys: dict[str, list[Stream]] = {}
            for s in self.faults.streams.values():
                state = self.faults.flow_state(s.flow.id)
                if state is not None and state.session and state.session.startswith(wanted):
                    keys.setdefault(state.session, []).append(s)
            if len(keys) > 1:
                raise exceptions.CommandError(
                    f"{len(keys)} sessions with open streams begin with {wanted!r}: give more of the key"
                )
            streams = next(iter(keys.values()), [])
        if not streams:
            raise exceptions.CommandError(
                f"no open SSE stream of a session {wanted!r} (sse.sessions lists the sessions held)"
            )
        broken = self.cut_streams(streams, "command sse.cut.session")
        return _said_cut(broken) if broken else "the connections of that session's streams are cut already"

    @command.command("sse.faults")  # type: ignore[untyped-decorator]
    def faults_command(self) -> str:
        """What is scheduled (the sse_fault_ options), the SSE streams open, and the faults injected so far."""
        n = len(self.faults.streams)
        armed = sum(1 for s in self.faults.streams.values() if s.injector is not None and not s.broken)
        done = ", ".join(f"{count} {kind}{'s' if count != 1 else ''}" for kind, count in self.faults.injected.items())
        return (
            f"scheduled: {self.faults.schedules()}; {n} open SSE stream{'s' if n != 1 else ''} "
            f"({armed} following the schedules); injected so far: {done}"
        )

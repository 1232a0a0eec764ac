"""The resume hooks: a reconnect's ``Last-Event-ID`` answered (from history, or passed upstream as decided), the
SSE response relayed through the core's relay, and the flow said at its end.

Failure policy: the addon must never cost a byte of traffic. Every hook and the stream callable catch their own
errors, log them once with the flow's context, and fall back to plain pass-through for that flow.
"""

from __future__ import annotations

import logging
from typing import Any

from mitmproxy import http

from sse_resume_core._decode import UnsupportedEncoding, decoder_for
from sse_resume_core._logsafe import id_digest, safe_traceback, withheld
from sse_resume_core._mcp import treatment
from sse_resume_core._resume import Charge, Decision
from sse_resume_shell._annotate import annotate, annotate_kept
from sse_resume_shell._flow import RESULT_HEADER, SSE_TYPE, FlowState, is_sse, show, wants_sse
from sse_resume_shell._keep import SSEKeep
from sse_resume_shell._shell import Shell
from sse_resume_shell._streams import copying, relaying

__all__ = ["SSEResume"]

log = logging.getLogger("sse_resume")

ENCODINGS = frozenset({"gzip", "x-gzip", "deflate", "br", "zstd", "compress", "identity"})


class SSEResume:
    """The hooks of a flow, from its request to its end; keep mode's requests go to the keeper by ``keep``."""

    def __init__(self, shell: Shell, keep: SSEKeep) -> None:
        self.shell = shell
        self.keep = keep
        # client connection id -> the replays made for it whose bytes mitmproxy may still hold (see _hold)
        self._charges: dict[str, list[Charge]] = {}

    async def request(self, flow: http.HTTPFlow) -> None:
        try:
            await self._request(flow)
        except Exception as e:
            log.error(
                "sse-resume: internal error on request %s; passing it through untouched\n%s", flow.id, safe_traceback(e)
            )
            self.shell.flows.pop(flow.id, None)

    async def _request(self, flow: http.HTTPFlow) -> None:
        shell = self.shell
        request = flow.request
        if request.http_version.startswith("HTTP/1") and flow.client_conn.id in self._charges:
            # mitmproxy reads a connection's next request only once it has written the previous response and
            # its writers have drained: the replays it held for this connection are sent.
            self._release(flow.client_conn.id)
        learned = self.keep.learned(request)
        if flow.response is not None or not (wants_sse(request) or learned):
            return
        if treatment(request.headers.get("mcp-protocol-version")) == "pass":
            return  # an MCP version without resumable streams: nothing to do, nothing touched
        state = shell.flows[flow.id] = FlowState(shell.session_of(request), flow)
        state.last_event_id = request.headers.get("last-event-id")
        if shell.keeper is not None and self.keep.route(flow, state):
            return
        if not wants_sse(request):
            del shell.flows[flow.id]  # a learned endpoint the keeper could not take: served as any other
            return
        if "accept-encoding" in request.headers:
            request.headers["accept-encoding"] = "identity"  # frames must arrive as text to be read
        last_event_id = request.headers.get("last-event-id")
        if request.method != "GET" or last_event_id is None:
            return
        mode = shell.settings.replay_mode
        inline = mode == "inline" or (mode == "auto" and SSE_TYPE not in request.headers.get("accept", "").lower())
        decision = await shell.resumer.decide(state.session, last_event_id, inline)
        state.decision = decision
        if decision.charge is not None:
            self._hold(flow.client_conn.id, decision.charge)
        log.info(
            "sse-resume: session %s: %s (%s), id %s",
            state.session[:12],
            decision.outcome,
            decision.note,
            id_digest(state.session, last_event_id),
        )
        if decision.body:
            flow.response = http.Response.make(
                200,
                decision.body,
                {"content-type": SSE_TYPE, "cache-control": "no-cache", RESULT_HEADER: "hit"},
            )
            state.answered = True
            annotate(flow, state)
        else:
            if decision.forward_id is None:
                del request.headers["last-event-id"]
            elif decision.forward_id != last_event_id:
                request.headers["last-event-id"] = decision.forward_id
            annotate(flow, state)  # said at once: the flow shows it while the stream is open
            if shell.live:
                show([flow])

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        try:
            self._responseheaders(flow)
        except Exception as e:
            log.error(
                "sse-resume: internal error on response %s; passing it through untouched\n%s",
                flow.id,
                safe_traceback(e),
            )
            self.shell.flows.pop(flow.id, None)
            if flow.response is not None and is_sse(flow.response):
                flow.response.stream = True

    def _responseheaders(self, flow: http.HTTPFlow) -> None:
        shell = self.shell
        flows = shell.flows
        response = flow.response
        kept = flows.get(flow.id)
        if kept is not None and kept.keep is not None:
            self.keep.restore(flow, kept)
            if is_sse(response):
                assert response is not None
                response.stream = True
            return
        if is_sse(response):
            self.keep.learn(flow.request)
        if not is_sse(response):
            flows.pop(flow.id, None)
            return
        assert response is not None
        transcript_bytes, budget = shell.settings.transcript_bytes, shell.transcript_budget
        if treatment(flow.request.headers.get("mcp-protocol-version")) == "pass":
            version = flow.request.headers.get("mcp-protocol-version", "")
            passed = flows[flow.id] = FlowState("", flow)
            why = f"MCP {_shown_version(version)}: nothing to resume"
            response.stream = copying(passed, why, transcript_bytes, budget)
            return
        state = flows.get(flow.id)
        if state is not None and state.answered:
            return
        if state is None:
            state = flows[flow.id] = FlowState(shell.session_of(flow.request), flow)
        if response.status_code != 200:
            # (an error is not a stream: it goes out as it came, headers and body)
            why = f"status {response.status_code}: not a stream"
            response.stream = copying(state, why, transcript_bytes, budget)
            return
        try:
            decoder = decoder_for(response.headers.get("content-encoding"))
        except UnsupportedEncoding:
            log.warning(
                "sse-resume: %s: cannot decode Content-Encoding %s; passing the stream through",
                flow.id,
                _shown_encoding(response.headers.get("content-encoding", "").strip().lower()),
            )
            response.stream = True
            del flows[flow.id]
            return
        decision = state.decision or Decision("fresh", state.session)
        if decision.outcome != "fresh":
            response.headers[RESULT_HEADER] = decision.outcome + ("; inline" if decision.outcome == "hit" else "")
        ends = False
        if decoder is not None:
            del response.headers["content-encoding"]
            if flow.request.http_version == "HTTP/1.1":
                # Chunked (below), so that the addon can end the response early (a body that decodes past its
                # bound, or not at all); and the connection closes after it, as the upstream's end still follows.
                response.headers["connection"] = "close"
                ends = True
        if decoder is not None or "content-length" in response.headers:
            # The body the client gets is not the upstream's length: decoded, or with the addon's bytes in front
            # (a comment, a replay, a restored retry) and duplicates dropped. (mitmproxy still reads the upstream
            # by the length it came with.) HTTP/1.1 gets chunked framing; HTTP/2 frames by itself; an HTTP/1.0
            # client reads to the connection's end.
            response.headers.pop("content-length", None)
            if flow.request.http_version == "HTTP/1.1":
                response.headers["transfer-encoding"] = "chunked"
            elif flow.request.http_version.startswith("HTTP/1"):
                response.headers["connection"] = "close"
        state.relay = shell.resumer.open(decision, release_early=flow.request.http_version.startswith("HTTP/1"))
        response.stream = relaying(flow.id, state, decoder, ends)

    def _hold(self, connection: str, charge: Charge) -> None:
        """Count a replay against the budget until mitmproxy no longer holds its bytes for ``connection``.

        A response made in the ``request`` hook is written after the ``response`` hook, and a client that does not
        read keeps it in mitmproxy's write buffer: the replay stays counted until the connection's next request
        (HTTP/1) or its end (``client_disconnected``). An inline replay is also released by its relay once sent
        (see ``Relay._feed``), or at the end of its flow."""
        held = self._charges.setdefault(connection, [])
        held[:] = [c for c in held if c.held]
        held.append(charge)

    def _release(self, connection: str) -> None:
        for charge in self._charges.pop(connection, ()):
            charge.release()

    def client_disconnected(self, client: Any) -> None:
        try:
            self._release(client.id)
        except Exception as e:
            log.error("sse-resume: internal error releasing replays\n%s", safe_traceback(e))

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)  # a client disconnect is how most SSE streams end

    def _finish(self, flow: http.HTTPFlow) -> None:
        try:
            state = self.shell.flows.pop(flow.id, None)
            if state is None:
                return
            charge = state.decision.charge if state.decision is not None else None
            if charge is not None and not state.answered:
                charge.release()  # an inline replay: the stream has ended (an answered one: see _hold)
            if state.answered:
                return
            if state.keep is not None:
                self.keep.restore(flow, state)
                keeper = self.shell.keeper
                report = keeper.report(state.keep) if keeper is not None else None
                if report is not None:
                    annotate_kept(flow, state, report)
                    if report.transcript is not None:
                        report.transcript.close()
                return
            if state.copy is not None:
                response = flow.response
                encoded = response is not None and response.headers.get("content-encoding", "identity") != "identity"
                if response is not None and not (encoded and state.copy.dropped):
                    response.raw_content = state.copy.value()  # (compressed, it is shown only when whole)
                state.copy.close()
            if state.passed and state.decision is None:
                flow.metadata["sse_resume"] = {"outcome": "passed", "passthrough": state.passed}
                return
            relay = state.relay
            if relay is not None:
                relay.flush()  # what it relayed before the client went is history too (a failure is logged)
            if relay is not None and relay.transcript is not None:
                if flow.response is not None:
                    flow.response.raw_content = relay.transcript.value()
                relay.transcript.close()
            if relay is not None or state.decision is not None:
                annotate(flow, state)
        except Exception as e:
            log.error("sse-resume: internal error annotating %s\n%s", flow.id, safe_traceback(e))


def _shown_version(version: str) -> str:
    """An MCP-Protocol-Version for the flow's metadata: a date as it is, anything else as its size and digest."""
    text = version.strip()
    if len(text) == 10 and text[4] == text[7] == "-" and text.replace("-", "").isdigit():
        return text
    return f"({withheld(version)})"


def _shown_encoding(value: str) -> str:
    """A Content-Encoding for a log line: a registered name as it is, anything else as a size and digest."""
    return repr(value) if value in ENCODINGS else f"({withheld(value)})"

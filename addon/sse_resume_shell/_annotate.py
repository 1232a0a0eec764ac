"""What the addon says on a flow: a sentence in its comment, the facts in ``flow.metadata["sse_resume"]``, a mark."""

from __future__ import annotations

from typing import Any

from mitmproxy import http

from sse_resume_core._resume import describe
from sse_resume_keep import KeepReport
from sse_resume_shell._flow import MARK, FlowState, is_sse, say, show_id

__all__ = ["annotate", "annotate_kept"]


def annotate(flow: http.HTTPFlow, state: FlowState) -> None:
    """Say on the flow, in words and as data, what the addon did with it."""
    decision = state.decision
    relay = state.relay
    outcome = decision.outcome if decision is not None else "fresh"
    shown = show_id(state.last_event_id)
    words: list[str] = [describe(decision, shown)] if decision is not None and outcome != "fresh" else []
    facts: dict[str, Any] = {"outcome": outcome, "session": state.session[:12]}
    if state.last_event_id is not None:
        facts["client_last_event_id"] = shown
        if not state.answered:  # (a hit answered by the proxy sent nothing upstream)
            sent = show_id(flow.request.headers.get("last-event-id"))
            facts["upstream_last_event_id"] = sent
            if sent != shown and outcome != "miss":  # (a miss says what went upstream)
                words.append(f"client's Last-Event-ID {shown}, sent upstream as {sent}")
    if decision is not None:
        facts["note"] = decision.note
        facts["replayed"] = len(decision.replay)
        if decision.held_back:
            facts["held_back"] = decision.held_back
    if relay is not None:
        facts.update(
            stream=relay.stream,
            recorded=relay.stats.recorded,
            duplicates=relay.stats.duplicates,
            oversize=relay.stats.oversize,
        )
        if relay.stats.duplicates:
            n = relay.stats.duplicates
            words.append(f"{n} duplicate event{'s' if n != 1 else ''} dropped")
        if relay.stats.oversize:
            words.append(f"{relay.stats.oversize} oversize piece(s) passed through unrecorded")
        if relay.transcript is not None and relay.transcript.dropped:
            facts["transcript_dropped_bytes"] = relay.transcript.dropped
    if state.stopped:
        words.append(f"response ended: {state.stopped}")
        facts["ended"] = state.stopped
    elif state.failed:
        words.append("internal error: passed through untouched from then on")
    if state.failed:
        facts["failed"] = True
    if relay is not None and relay.passthrough:
        facts["passthrough"] = relay.passthrough
    elif state.passed:
        facts["passthrough"] = state.passed
    flow.metadata["sse_resume"] = facts
    if words:
        say(flow, state, "sse-resume: " + "; ".join(words))
        if outcome in ("hit", "miss") or (relay is not None and relay.stats.duplicates):
            flow.marked = MARK


def annotate_kept(flow: http.HTTPFlow, state: FlowState, report: KeepReport) -> None:
    """Say on a flow the keeper served what the keeper did (its transcript goes on the flow too)."""
    if report.transcript is not None and flow.response is not None and is_sse(flow.response):
        flow.response.raw_content = report.transcript.value()
    words = [f"kept: {report.note}" if report.note else "kept: the proxy read the upstream stream itself"]
    if report.reconnects:
        words.append(f"upstream reconnected {report.reconnects} time{'s' if report.reconnects != 1 else ''}")
    if report.ended and report.ended != "client gone":
        words.append(f"response ended: {report.ended}")
    if state.last_event_id is not None:
        words.append(f"client's Last-Event-ID {show_id(state.last_event_id)}")
    say(flow, state, "sse-resume: " + "; ".join(words))
    flow.metadata["sse_resume"] = {
        "outcome": report.outcome,
        "session": state.session[:12],
        "kept": True,
        "stream": report.stream,
        "replayed": report.replayed,
        "delivered": report.delivered,
        "upstream_reconnects": report.reconnects,
        "upstream_status": report.upstream_status,
    }
    if report.outcome in ("hit", "miss") or report.reconnects:
        flow.marked = MARK

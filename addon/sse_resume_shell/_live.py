"""Open SSE flows shown as they grow (``sse_live_flows``): their transcripts put on them about once a second."""

from __future__ import annotations

import logging

from mitmproxy import http

from sse_resume_core._logsafe import safe_traceback
from sse_resume_core._view import Transcript
from sse_resume_keep import KeepReport
from sse_resume_shell._annotate import annotate_kept
from sse_resume_shell._flow import FlowState, is_sse, show
from sse_resume_shell._shell import Shell

__all__ = ["SSELiveFlows"]

log = logging.getLogger("sse_resume")


class SSELiveFlows:
    """Decides whether open flows are refreshed (``shell.live``); :meth:`refresh` runs on the flush timer."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell

    def configure(self, updated: set[str]) -> None:
        if self.shell.running and any(name.startswith("sse_") for name in updated):
            self.shell.live = self._wants_live()

    def running(self) -> None:
        self.shell.live = self._wants_live()

    def _wants_live(self) -> bool:
        """Whether open flows are refreshed: sse_live_flows, and for 'auto' whether this tool shows flows (mitmweb
        and the console hold them in a view; mitmdump has none, and writes saved flows at their end anyway)."""
        from mitmproxy import ctx

        wanted = self.shell.settings.live_flows
        return wanted == "on" or (wanted == "auto" and ctx.master.addons.get("view") is not None)  # type: ignore[no-untyped-call]

    def refresh(self) -> None:
        """What the flush timer calls about once a second: the open flows refreshed, when ``shell.live``."""
        if not self.shell.live:
            return
        try:
            self._refresh_live()
        except Exception as e:  # not expected: the flows are shown at their end as ever
            log.error("sse-resume: internal error refreshing open flows\n%s", safe_traceback(e))

    def _transcript_of(self, state: FlowState) -> tuple[Transcript | None, KeepReport | None]:
        """The transcript of an open flow (and the keeper's report of a kept one)."""
        if state.keep is not None:
            keeper = self.shell.keeper
            report = keeper.live_report(state.keep) if keeper is not None else None
            return (report.transcript if report is not None else None), report
        if state.relay is not None:
            return state.relay.transcript, None
        return state.copy, None

    def _refresh_live(self) -> None:
        """Put each open SSE flow's transcript on it, when it changed since last time, and tell the tool's view.

        Cost: one join of the transcript (at most sse_transcript_bytes) per flow that changed, once a second."""
        changed: list[http.HTTPFlow] = []
        for state in self.shell.flows.values():
            flow = state.flow
            if flow is None or state.answered or flow.response is None or not is_sse(flow.response):
                continue
            transcript, report = self._transcript_of(state)
            said = False
            if report is not None and report.outcome not in ("kept", state.kept_outcome):
                state.kept_outcome = report.outcome
                annotate_kept(flow, state, report)  # (it puts the transcript on the flow too)
                said = True
            if transcript is not None and transcript.version != state.shown:
                state.shown = transcript.version
                flow.response.raw_content = transcript.value()
                said = True
            if said:
                changed.append(flow)
        if changed:
            show(changed)

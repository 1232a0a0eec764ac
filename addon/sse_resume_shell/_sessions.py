"""A session's end: a successful DELETE with the session header, or a 404 for it, takes its history with it."""

from __future__ import annotations

import logging

from mitmproxy import http

from sse_resume_core._logsafe import safe_traceback
from sse_resume_shell._shell import Shell

__all__ = ["SSESessionEnd"]

log = logging.getLogger("sse_resume")


class SSESessionEnd:
    """Drops an ended session's history (and its kept streams) at once. (Listed after the resume hooks: a
    flow is said before its session goes.)"""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell

    def response(self, flow: http.HTTPFlow) -> None:
        try:
            self._lifecycle(flow)
        except Exception as e:
            log.error("sse-resume: internal error on the session lifecycle of %s\n%s", flow.id, safe_traceback(e))

    def _lifecycle(self, flow: http.HTTPFlow) -> None:
        """An ended session (a successful DELETE, or a 404 for its id) takes its history with it at once."""
        shell = self.shell
        response = flow.response
        request = flow.request
        if response is None or shell.settings.session_header not in request.headers:
            return
        ended = (request.method == "DELETE" and 200 <= response.status_code < 300) or response.status_code == 404
        if ended and shell.keeper is not None:
            shell.keeper.drop_session(shell.session_of(request))
        if ended and shell.store.drop_session(shell.session_of(request)):
            log.info(
                "sse-resume: session %s ended (%s %d): history dropped",
                shell.session_of(request)[:12],
                request.method,
                response.status_code,
            )

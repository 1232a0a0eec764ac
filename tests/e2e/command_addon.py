"""Test-only: runs the addon's commands inside a running mitmdump, which has no command prompt of its own.

    mitmdump -s tests/e2e/command_addon.py -s addon/sse_resume.py ...

A request for ``/__command__/NAME`` (to the proxy, whatever its mode) is answered here and goes nowhere else: its
JSON body is ``{"flows": FILTER}`` to call a command that takes flows with the open streams that the mitmproxy
filter expression matches (mitmdump has no view to resolve ``@all`` or a filter: this stands in for it),
``{"args": [...]}`` for a command that takes strings, or ``{"session_of": FILTER}`` to give a command the session
header's value (``sse_session_header``) of the first open stream that the filter matches, as a user reads it off
the flow. The answer is the command's result, or a 400 with its error.
"""

from __future__ import annotations

import json
import logging

from mitmproxy import ctx, exceptions, flowfilter, http

log = logging.getLogger("command_addon")
PREFIX = "/__command__/"


class Commands:
    def __init__(self) -> None:
        self.open: dict[str, http.HTTPFlow] = {}  # flows whose response is under way

    def request(self, flow: http.HTTPFlow) -> None:
        if not flow.request.path.startswith(PREFIX):
            return
        name = flow.request.path[len(PREFIX) :]
        try:
            body = json.loads(flow.request.get_text() or "{}")
            if "flows" in body:
                match = flowfilter.parse(body["flows"])
                result = ctx.master.commands.call(name, [f for f in self.open.values() if match(f)])
            elif "session_of" in body:
                match = flowfilter.parse(body["session_of"])
                flows = [f for f in self.open.values() if match(f)]
                if not flows:
                    raise ValueError(f"no open flow matches {body['session_of']!r}")
                result = ctx.master.commands.call(name, flows[0].request.headers[ctx.options.sse_session_header])
            else:
                result = ctx.master.commands.call_strings(name, body.get("args", []))
            flow.response = http.Response.make(200, str(result), {"content-type": "text/plain"})
        except (exceptions.CommandError, ValueError) as e:
            flow.response = http.Response.make(400, str(e), {"content-type": "text/plain"})

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self.open[flow.id] = flow

    def response(self, flow: http.HTTPFlow) -> None:
        self.open.pop(flow.id, None)

    def error(self, flow: http.HTTPFlow) -> None:
        self.open.pop(flow.id, None)


addons = [Commands()]

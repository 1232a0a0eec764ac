"""Test-only: changes mitmproxy options at run time inside a running mitmdump, which has no console to type
``set`` into.

    mitmdump -s addon/sse_resume.py -s tests/e2e/options_addon.py

``GET /__options__?sse_event_ttl=301`` sets each option named in the query through mitmproxy's own option manager
(as ``set sse_event_ttl=301`` in mitmproxy's console does: every addon's ``configure`` hook runs) and answers 200
with the options' values after the change, as JSON; 400 with mitmproxy's message when the change is refused. The
request never goes upstream.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlsplit

from mitmproxy import ctx, exceptions, http

PATH = "/__options__"


class Options:
    def request(self, flow: http.HTTPFlow) -> None:
        url = urlsplit(flow.request.path)
        if url.path != PATH:
            return
        changes = parse_qsl(url.query, keep_blank_values=True)
        try:
            ctx.options.set(*(f"{name}={value}" for name, value in changes))
        except exceptions.OptionsError as e:
            flow.response = http.Response.make(400, str(e).encode(), {"content-type": "text/plain"})
            return
        values = {name: getattr(ctx.options, name) for name, _ in changes}
        flow.response = http.Response.make(200, json.dumps(values).encode(), {"content-type": "application/json"})


addons = [Options()]

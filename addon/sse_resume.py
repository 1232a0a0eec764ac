"""sse-resume: a mitmproxy addon that makes Server-Sent Events streams resumable.

mitmdump -s addon/sse_resume.py
"""

from __future__ import annotations

from mitmproxy import http


class SSEResume:
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is not None and response.headers.get("content-type", "").startswith("text/event-stream"):
            response.stream = True


addons = [SSEResume()]

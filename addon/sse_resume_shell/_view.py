"""The content view that shows an event stream as its events (in mitmweb's and the console's flow view)."""

from __future__ import annotations

from mitmproxy import contentviews
from mitmproxy.addonmanager import Loader

from sse_resume_core._view import render_events
from sse_resume_shell._flow import SSE_TYPE

__all__ = ["SSEContentview", "SSEView"]


class SSEContentview(contentviews.Contentview):
    """Shows an event stream as events: id, type, retry, and the data, JSON pretty-printed."""

    @property
    def name(self) -> str:
        return "SSE"

    @property
    def syntax_highlight(self) -> contentviews.SyntaxHighlight:
        return "yaml"  # mitmproxy's advice for JSON-like text

    def prettify(self, data: bytes, metadata: contentviews.Metadata) -> str:
        return render_events(data)

    def render_priority(self, data: bytes, metadata: contentviews.Metadata) -> float:
        return 2.0 if (metadata.content_type or "").lower().startswith(SSE_TYPE) else -1.0


class SSEView:
    """Adds the SSE content view."""

    def load(self, loader: Loader) -> None:
        contentviews.add(SSEContentview())

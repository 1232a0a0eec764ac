"""sse_resume_keep: keep mode's I/O, the proxy reading SSE upstreams itself.

An I/O adapter around ``sse_resume_core``: it knows HTTP and asyncio, not mitmproxy. The addon routes kept
requests to its :class:`Keeper` with a one-time ticket.
"""

from sse_resume_keep._keeper import TICKET_HEADER, Keeper, KeeperStats, KeepReport, KeepSettings, UpstreamRequest
from sse_resume_keep._upstream import insecure_context

__all__ = [
    "TICKET_HEADER",
    "KeepReport",
    "KeepSettings",
    "Keeper",
    "KeeperStats",
    "UpstreamRequest",
    "insecure_context",
]

"""MCP (Model Context Protocol) rules that decide whether the addon serves a stream, as data.

Streamable HTTP resumption by ``Last-Event-ID`` exists from 2025-03-26 to 2025-11-25. The legacy HTTP+SSE
transport (2024-11-05) has no event ids, and 2026-07-28 (SEP-2575) removed resumable SSE: traffic of those
versions has nothing to resume and passes through untouched. A new version is one line in ``PROTOCOL_VERSIONS``.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = ["LEGACY_ENDPOINT_EVENT", "PROTOCOL_VERSIONS", "Treatment", "treatment"]

Treatment = Literal["serve", "pass"]

PROTOCOL_VERSIONS: Final[dict[str, Treatment]] = {
    "2024-11-05": "pass",  # legacy HTTP+SSE: no event ids, no resumption
    "2025-03-26": "serve",
    "2025-06-18": "serve",
    "2025-11-25": "serve",  # priming events, polling (SEP-1699)
    "2026-07-28": "pass",  # resumable SSE removed (SEP-2575)
}

LEGACY_ENDPOINT_EVENT: Final = "endpoint"
"""The first event of a legacy HTTP+SSE stream, which names the URL to POST messages to."""


def treatment(version: str | None) -> Treatment:
    """How to treat traffic that carries ``MCP-Protocol-Version: version`` (``None``: no such header).

    No header means not MCP, or an MCP client before 2025-06-18 (which did not send it): served. An unknown
    version is treated like the newest known version that is not later than it (dates compare as strings), so a
    future version inherits 2026-07-28's rule; one before every known version is served.

    >>> treatment("2025-06-18"), treatment("2026-07-28"), treatment("2027-01-01"), treatment(None)
    ('serve', 'pass', 'pass', 'serve')
    """
    if not version:
        return "serve"
    version = version.strip()
    if version in PROTOCOL_VERSIONS:
        return PROTOCOL_VERSIONS[version]
    earlier = [v for v in PROTOCOL_VERSIONS if v <= version]
    return PROTOCOL_VERSIONS[max(earlier)] if earlier else "serve"

"""Human-readable renderings of event streams and of what the addon did: for flow views, comments and commands."""

from __future__ import annotations

import json
from collections import deque

from sse_resume_core._parser import BlockKind, SSEParser

__all__ = ["Transcript", "render_events"]


def _pretty(data: str) -> str:
    stripped = data.lstrip()
    if stripped[:1] in ("{", "["):
        try:
            return json.dumps(json.loads(data), indent=2, ensure_ascii=False)
        except ValueError:
            pass
    return data


def render_events(data: bytes, max_size: int = 1024 * 1024) -> str:
    """Render an event stream as a list of events: number, id, type, retry, then the data (JSON pretty-printed).

    >>> print(render_events(b'id: 7\\nevent: note\\ndata: {"a": 1}\\n\\n: ping\\n\\n'))
    #1  id: 7  type: note
    {
      "a": 1
    }
    <BLANKLINE>
    : ping
    """
    parser = SSEParser(max_size)
    blocks = parser.feed(data) + parser.close()
    out: list[str] = []
    n = 0
    for block in blocks:
        if block.kind is BlockKind.EVENT:
            n += 1
            head = [f"#{n}"]
            if block.id is not None:
                head.append(f"id: {block.id}" if block.id else "id: (reset)")
            if block.type != "message":
                head.append(f"type: {block.type}")
            if block.retry is not None:
                head.append(f"retry: {block.retry}")
            out.append("  ".join(head))
            out.append(_pretty(block.data or ""))
            out.append("")
        elif block.kind is BlockKind.EMPTY:
            raw = block.raw.decode("utf-8", "replace").strip("\r\n")
            if block.id is not None:
                out.append(f"(position) id: {block.id}" if block.id else "(position) id reset")
            if block.retry is not None:
                out.append(f"retry: {block.retry}")
            comments = [line for line in raw.splitlines() if line.startswith(":")]
            out.extend(comments)
            if block.id is not None or block.retry is not None or comments:
                out.append("")
        elif block.kind is BlockKind.OVERSIZE:
            out.append(f"(oversize block, {len(block.raw)} bytes, not interpreted)")
        elif block.kind is BlockKind.BOM:
            continue  # (the byte order mark at the start: nothing to show)
        else:
            out.append(f"(unfinished at end of stream, {len(block.raw)} bytes)")
    return "\n".join(out).rstrip("\n")


class Transcript:
    """The most recent bytes a relay sent, in whole pieces, up to ``limit`` bytes.

    Memory: at most ``limit`` bytes plus one piece.
    """

    __slots__ = ("_pieces", "_size", "dropped", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._pieces: deque[bytes] = deque()
        self._size = 0
        self.dropped = 0
        """Bytes dropped from the front to stay within the limit."""

    def add(self, data: bytes) -> None:
        """Keep ``data``; drop the oldest pieces beyond the limit. Runtime complexity: O(1) amortized."""
        if not data:
            return
        self._pieces.append(data)
        self._size += len(data)
        while self._size > self.limit and self._pieces:
            old = self._pieces.popleft()
            self._size -= len(old)
            self.dropped += len(old)

    def extend(self, pieces: list[bytes]) -> None:
        """Keep several pieces at once, as one piece (dropped as a whole: cheaper than piece by piece)."""
        self.add(b"".join(pieces))

    def value(self) -> bytes:
        """The kept bytes, with a comment in front when older ones were dropped."""
        body = b"".join(self._pieces)
        if self.dropped:
            return b": sse-resume: transcript truncated, %d earlier bytes not kept\n\n" % self.dropped + body
        return body

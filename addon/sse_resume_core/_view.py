"""Human-readable renderings of event streams and of what the addon did: for flow views, comments and commands."""

from __future__ import annotations

import json
import weakref
from collections import deque

from sse_resume_core._parser import BlockKind, SSEParser

__all__ = ["Transcript", "TranscriptBudget", "render_events"]


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


class TranscriptBudget:
    """A bound on the bytes of every transcript together (``limit``; 0: no bound).

    Transcripts made with a budget count their bytes in :attr:`total`; when the total goes over the limit, the
    largest transcripts lose their oldest pieces until all of them together hold at most seven eighths of it (so
    the next trim waits for an eighth of the limit to come in). Transcripts are held weakly: one dropped without
    :meth:`Transcript.close` stops counting at the next trim.
    """

    __slots__ = ("_members", "limit", "total", "trimmed")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        """Bytes held by the transcripts of this budget (exact after each trim; may count a lost one until then)."""
        self.trimmed = 0
        """Bytes dropped from transcripts to keep within the limit, so far."""
        self._members: weakref.WeakSet[Transcript] = weakref.WeakSet()

    def _join(self, transcript: Transcript) -> None:
        self._members.add(transcript)

    def _leave(self, transcript: Transcript) -> None:
        self._members.discard(transcript)
        self.total -= transcript.size

    def _grew(self, by: int) -> None:
        self.total += by
        if self.limit and self.total > self.limit:
            self.trim()

    def trim(self) -> None:
        """Cut the largest transcripts to a common size, so that together they hold at most 7/8 of the limit.

        Runtime complexity: O(n log n) for n transcripts, once per eighth of the limit taken in."""
        members = sorted(self._members, key=lambda t: t.size, reverse=True)
        self.total = sum(t.size for t in members)
        target = self.limit - self.limit // 8
        if self.total <= target:
            return
        # The largest common size ``cap`` such that the transcripts, each cut to it, hold at most ``target``.
        rest = self.total
        cap = 0
        for i, t in enumerate(members):
            rest -= t.size  # the bytes of the smaller ones (kept whole)
            cap = (target - rest) // (i + 1)
            nxt = members[i + 1].size if i + 1 < len(members) else 0
            if cap >= nxt:
                break
        for t in members:
            if t.size <= cap:
                break
            before = t.size
            t.cut(cap)
            self.total -= before - t.size
            self.trimmed += before - t.size


class Transcript:
    """The most recent bytes a relay sent, in whole pieces, up to ``limit`` bytes (and within ``budget``).

    Memory: at most ``limit`` bytes plus one piece. :attr:`version` changes whenever the bytes kept do.
    """

    __slots__ = ("__weakref__", "_budget", "_pieces", "_size", "dropped", "limit", "version")

    def __init__(self, limit: int, budget: TranscriptBudget | None = None) -> None:
        self.limit = limit
        self._pieces: deque[bytes] = deque()
        self._size = 0
        self.dropped = 0
        """Bytes dropped from the front to stay within the limit."""
        self.version = 0
        """How many times the bytes kept have changed (a live view updates when it moves)."""
        self._budget = budget
        if budget is not None:
            budget._join(self)

    @property
    def size(self) -> int:
        """The bytes kept."""
        return self._size

    def add(self, data: bytes) -> None:
        """Keep ``data``; drop the oldest pieces beyond the limit. Runtime complexity: O(1) amortized."""
        if not data:
            return
        self.version += 1
        self._pieces.append(data)
        before = self._size
        self._size += len(data)
        while self._size > self.limit and self._pieces:
            old = self._pieces.popleft()
            self._size -= len(old)
            self.dropped += len(old)
        if self._budget is not None:
            self._budget._grew(self._size - before)

    def extend(self, pieces: list[bytes]) -> None:
        """Keep several pieces at once, as one piece (dropped as a whole: cheaper than piece by piece)."""
        self.add(b"".join(pieces))

    def cut(self, size: int) -> None:
        """Drop the oldest pieces until at most ``size`` bytes are kept (the budget's trim)."""
        if self._size > size:
            self.version += 1
        while self._size > size and self._pieces:
            old = self._pieces.popleft()
            self._size -= len(old)
            self.dropped += len(old)

    def close(self) -> None:
        """Stop counting against the budget (the bytes are on the flow now, or not wanted)."""
        if self._budget is not None:
            self._budget._leave(self)
            self._budget = None

    def value(self) -> bytes:
        """The kept bytes, with a comment in front when older ones were dropped."""
        body = b"".join(self._pieces)
        if self.dropped:
            return b": sse-resume: transcript truncated, %d earlier bytes not kept\n\n" % self.dropped + body
        return body

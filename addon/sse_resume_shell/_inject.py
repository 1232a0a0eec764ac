"""The faults counted in events, sans I/O: :class:`Injector` cuts, stalls or repeats one response's events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from sse_resume_core._parser import DEFAULT_MAX_SIZE, BlockKind, SSEParser

__all__ = ["MAX_HELD", "Fault", "Injector", "Kind"]

MAX_HELD: Final = 8 * 1024 * 1024
"""Bytes a stall holds per stream, at most: past them it ends early (a proxy cannot hold back the upstream)."""

Kind = Literal["cut", "stall", "repeat"]


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault injected into a stream: its kind, the stream's events sent until then (0 when they are not
    counted), the last event id in force then (what the client would send as Last-Event-ID), and what asked."""

    kind: Kind
    events: int
    last_event_id: str
    by: str


class Injector:
    """Applies the event-counted faults to one response's output, sans I/O: bytes and a clock in, bytes out.

    ``feed(data, now)`` takes the bytes the stream would send and returns those to send now, with the faults made
    on the way. It counts events (blocks that dispatch one) with the core's parser, which only reads along: the
    bytes pass as they come, in pieces of any size, except where a fault falls. After a cut (``done``) nothing
    more is sent.

    Memory: the parser holds at most ``max_event_bytes`` of an unfinished event (a larger one passes uncounted);
    a stall holds at most ``max_held`` bytes, and ends early past them.
    """

    def __init__(
        self,
        *,
        cut_after: int = 0,
        stall_after: int = 0,
        stall_for: float = 0.0,
        repeat_after: int = 0,
        max_event_bytes: int = DEFAULT_MAX_SIZE,
        max_held: int = MAX_HELD,
    ) -> None:
        self.cut_after = cut_after
        self.stall_after = stall_after
        self.stall_for = stall_for
        self.repeat_after = repeat_after
        self.max_held = max_held
        self._parser = SSEParser(max_event_bytes)
        self._fed = 0  # bytes fed to the parser
        self._ended = 0  # bytes of the blocks it completed
        self.events = 0  # events sent (counted as they pass, held or not)
        self.last_event_id = ""
        self.done = False  # cut: nothing more is sent
        self._held: list[bytes] = []
        self._held_bytes = 0
        self.until: float | None = None  # a stall holds what is sent until then
        self._since = 0.0
        self.stalls = 0
        self.stalled = 0.0  # seconds the stalls held output, in all
        self.cut_short = 0  # stalls ended early, at max_held
        self.repeats = 0
        self.last_repeated = ""  # the id of the last event sent twice
        self.after_cut = 0  # events the stream would have sent after its cut (counted, never sent)

    def feed(self, data: bytes, now: float) -> tuple[bytes, list[Fault]]:
        """The bytes to send now for ``data`` (what the stream would send), and the faults made.

        Runtime complexity: O(len(data)), plus the held bytes when a stall ends."""
        faults: list[Fault] = []
        if self.done:
            self.after_cut += sum(b.kind is BlockKind.EVENT for b in self._parser.feed(data))
            return b"", faults
        out: list[bytes] = []
        if self.until is not None and now >= self.until:
            self._release(out, now)
        if not data:
            return b"".join(out), faults
        start = self._fed
        self._fed += len(data)
        pos = 0
        blocks = self._parser.feed(data)
        for at, block in enumerate(blocks):
            self._ended += len(block.raw)
            if block.kind is not BlockKind.EVENT:
                continue
            self.events = n = self.events + 1
            self.last_event_id = block.last_event_id
            cut = n == self.cut_after
            repeat = self.repeat_after and not n % self.repeat_after
            stall = self.stall_after and not n % self.stall_after and self.until is None
            if not (cut or repeat or stall):
                continue
            end = self._ended - start
            self._send(out, data[pos:end], now)
            pos = end
            if repeat:
                self._send(out, block.raw, now)
                self.repeats += 1
                self.last_repeated = block.last_event_id
                faults.append(Fault("repeat", n, block.last_event_id, f"sse_fault_repeat_after={self.repeat_after}"))
            if cut:
                self.done = True
                self.after_cut = sum(b.kind is BlockKind.EVENT for b in blocks[at + 1 :])
                self._held.clear()  # lost with the connection, as on a network (the client resumes them)
                self._held_bytes = 0
                self.until = None
                faults.append(Fault("cut", n, block.last_event_id, f"sse_fault_cut_after={self.cut_after}"))
                return b"".join(out), faults
            if stall and self.until is None:
                self.until, self._since = now + self.stall_for, now
                self.stalls += 1
                faults.append(Fault("stall", n, block.last_event_id, f"sse_fault_stall_after={self.stall_after}"))
        self._send(out, data[pos:] if pos else data, now)
        return b"".join(out), faults

    def finish(self, now: float) -> bytes:
        """The stream ends: what a stall still holds, to send before its end."""
        out: list[bytes] = []
        if self.until is not None and not self.done:
            self._release(out, now)
        return b"".join(out)

    def stop(self, now: float) -> None:
        """The stream ended without its end (the client left, or was cut): what a stall held is dropped."""
        if self.until is not None:
            self.stalled += now - self._since
        self._held.clear()
        self._held_bytes = 0
        self.until = None
        self.done = True

    def take_held(self) -> bytes:
        """Every byte held, handed back at once (for a caller that stops injecting faults)."""
        held = b"".join(self._held)
        self._held.clear()
        self._held_bytes = 0
        self.until = None
        return held

    @property
    def stalling(self) -> bool:
        return self.until is not None

    def _send(self, out: list[bytes], piece: bytes, now: float) -> None:
        if not piece:
            return
        if self.until is None:
            out.append(piece)
            return
        self._held.append(piece)
        self._held_bytes += len(piece)
        if self._held_bytes > self.max_held:
            self.cut_short += 1
            self._release(out, now)

    def _release(self, out: list[bytes], now: float) -> None:
        out.extend(self._held)
        self._held.clear()
        self._held_bytes = 0
        self.stalled += now - self._since
        self.until = None

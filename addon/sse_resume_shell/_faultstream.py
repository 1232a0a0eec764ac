"""An open SSE response as fault injection sees it (:class:`Stream`), and how its faults are said on its flow."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

from mitmproxy import ctx, hooks, http

from sse_resume_core._config import FaultSettings
from sse_resume_core._parser import BlockKind, SSEParser
from sse_resume_shell._inject import MAX_HELD, Fault, Injector, Kind

__all__ = ["MARKS", "Stream", "StreamCallable", "StreamState", "show"]

MARKS: Final = {"cut": ":scissors:", "stall": ":hourglass:", "repeat": ":repeat:"}
"""The mark a flow gets for the last fault injected into it."""

SSE_TYPE: Final = "text/event-stream"


class StreamState(Protocol):
    """What this addon reads of the SSEResume addon's state of a flow (its ``FlowState``)."""

    @property
    def session(self) -> str: ...

    @property
    def note(self) -> str: ...


StreamCallable = Callable[[bytes], Iterable[bytes] | bytes]


class Stream:
    """An open SSE response, and the faults injected into it."""

    __slots__ = ("broken", "cut", "flow", "injector", "last", "said", "settings", "timer")

    def __init__(self, flow: http.HTTPFlow) -> None:
        self.flow = flow
        self.settings: FaultSettings | None = None  # the schedules it follows (those set when it began)
        self.injector: Injector | None = None
        self.timer: asyncio.TimerHandle | None = None  # sse_fault_cut_every's
        self.cut: Fault | None = None
        self.last: Kind | None = None  # the kind of the last fault injected
        self.said = ""  # this addon's sentence in the flow's comment
        self.broken = False  # fault injection failed on it: it goes on untouched

    def fault(self, by: str) -> Fault:
        """A cut of this stream now, asked for by ``by``."""
        i = self.injector
        return Fault("cut", i.events if i else 0, i.last_event_id if i else "", by)

    def sentence(self) -> str:
        words: list[str] = []
        i = self.injector
        s = self.settings
        if i is not None and s is not None and i.stalls:
            n = i.stalls
            held = "stalling now" if i.stalling else f"{i.stalled:.1f} s held in all"
            words.append(
                f"stalled {n} time{'s' if n != 1 else ''} for {s.stall_for} s, after every "
                f"{_nth(s.stall_after)} event (sse_fault_stall_after={s.stall_after}); {held}"
                + (f"; {i.cut_short} ended early, at {MAX_HELD} bytes held" if i.cut_short else "")
            )
        if i is not None and s is not None and i.repeats:
            n = i.repeats
            words.append(
                f"sent {n} event{'s' if n != 1 else ''} twice, every {_nth(s.repeat_after)} "
                f"(sse_fault_repeat_after={s.repeat_after}); the last, id {_shown_id(i.last_repeated)}"
            )
        if self.cut is not None:
            c = self.cut
            after = f" after {c.events} event{'s' if c.events != 1 else ''}, last id {_shown_id(c.last_event_id)}"
            words.append(f"client connection cut{after if c.events else ''} ({c.by})")
        return "sse-resume fault: " + "; ".join(words)

    def facts(self) -> dict[str, Any]:
        facts: dict[str, Any] = {}
        i = self.injector
        if i is not None:
            facts.update(events=i.events, stalls=i.stalls, stalled_seconds=round(i.stalled, 3), repeats=i.repeats)
            if i.cut_short:
                facts["stalls_ended_early"] = i.cut_short
            if i.repeats:
                facts["last_repeated_id"] = _shown_id(i.last_repeated)
        if self.cut is not None:
            facts["cut"] = {
                "after_events": self.cut.events,
                "events_relayed_after": i.after_cut if i is not None else 0,
                "last_event_id": _shown_id(self.cut.last_event_id),
                "by": self.cut.by,
            }
        return facts

    def annotate(self, note: str) -> None:
        """Mark the flow for its last fault, and put this addon's sentence in its comment, before the SSEResume
        addon's own, ``note`` (which that addon replaces at the comment's end as it says more)."""
        flow = self.flow
        sentence = self.sentence()
        flow.comment = _placed(flow.comment, self.said, sentence, note)
        self.said = sentence
        if self.last is not None:
            flow.marked = MARKS[self.last]
        flow.metadata["sse_faults"] = self.facts()


def show(flows: list[http.HTTPFlow]) -> None:
    """Tell mitmweb's or the console's view that these open flows changed (mitmdump has none)."""
    if ctx.master.addons.get("view") is not None:  # type: ignore[no-untyped-call]
        ctx.master.addons.trigger(hooks.UpdateHook(flows))


def _placed(comment: str, old: str, new: str, note: str) -> str:
    """``comment`` with ``new`` in place of ``old``, or else put before ``note`` when the comment ends with it."""
    if old and (at := comment.rfind(old)) >= 0:
        return comment[:at] + new + comment[at + len(old) :]
    if note and comment.endswith(note):
        head = comment[: -len(note)].rstrip("\n")
        return f"{head}\n{new}\n{note}" if head else f"{new}\n{note}"
    return f"{comment}\n{new}" if comment else new


def _without_last_events(data: bytes, n: int) -> bytes:
    """``data`` (an event stream) up to the end of the event ``n`` events before its last one."""
    parser = SSEParser(len(data) + 1)
    blocks = parser.feed(data) + parser.close()
    keep = sum(b.kind is BlockKind.EVENT for b in blocks) - n
    end = seen = 0
    for block in blocks:
        if seen >= keep:
            break
        end += len(block.raw)
        seen += block.kind is BlockKind.EVENT
    return data[:end]


def _said_cut(streams: list[Stream]) -> str:
    n = len(streams)
    shown = ", ".join(s.flow.id[:8] for s in streams[:5]) + (" ..." if n > 5 else "")
    return (
        f"cut the client connection{'s' if n != 1 else ''} of {n} SSE stream{'s' if n != 1 else ''} ({shown}): "
        "the clients reconnect with Last-Event-ID"
    )


def _nth(n: int) -> str:
    if n == 1:
        return "single"
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _shown_id(event_id: str, limit: int = 40) -> str:
    """An event id as the flow's comment shows it: quoted, escaped, shortened ("" is no id)."""
    if not event_id:
        return "(none)"
    text = repr(event_id)
    return text if len(text) <= limit else text[: limit - 3] + "...'"


def _is_sse(response: http.Response) -> bool:
    return bool(response.headers.get("content-type", "").lower().startswith(SSE_TYPE))

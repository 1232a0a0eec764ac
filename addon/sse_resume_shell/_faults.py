"""Fault injection for the person debugging an SSE client: cut, stall or repeat a stream on purpose.

    mitmdump -s addon/sse_resume.py --set sse_fault_cut_after=5

Commands, for the SSE streams open now (mitmproxy's console, mitmweb's command bar):

- ``sse.cut FLOWS`` cuts the client connections of these flows (``@all``, ``@marked``, ``@<flow id>``, or a filter
  expression such as ``"~u /mcp & ~m GET"``);
- ``sse.cut.session SESSION`` cuts those of every open SSE stream of one session: a key, or its first characters,
  as ``sse.sessions`` shows it, or the value of its session header (``Mcp-Session-Id``);
- ``sse.faults`` says what is scheduled and what was injected so far.

Options put faults on a schedule, in mitmdump too (``--set``). Each applies to the SSE responses that begin once it
is set; ``sse_fault_filter`` narrows them to the flows a mitmproxy filter expression matches:

- ``sse_fault_cut_after=N``: a stream's client connection is cut after its N-th event;
- ``sse_fault_cut_every=S``: it is cut S seconds after its response began;
- ``sse_fault_stall_after=N``: after every N-th event, the events that follow are held ``sse_fault_stall_for``
  seconds;
- ``sse_fault_repeat_after=N``: every N-th event is sent twice in a row.

How a cut is made (verified with mitmproxy 12.3.1): the client's connection is closed the way mitmproxy closes one
itself, by its connection handler (``proxyserver.connections``, ``close_connection``): what was written is flushed,
then the connection ends in the middle of the response. The client sees it break (HTTP/1.1: a chunked body without
its end) and reconnects with Last-Event-ID; mitmproxy closes the upstream side as for any client that leaves. On
HTTP/2 every stream of that connection breaks, as in a network failure. ``flow.kill()`` does not cut: a streaming
flow that is killed goes on streaming (mitmproxy looks at kills between hooks only). Ending the stream callable's
output (an empty chunk) ends the response cleanly, which is no failure, and can happen only when the upstream sends.

Stall and repeat wrap the stream callable that the SSEResume addon set in ``responseheaders`` (this addon comes
after it in the script's list of addons, so its hook runs later), and find the events in what that callable sends:
what the history records and the flow's transcript show is unchanged (a repeated copy is in neither). A stream
callable can send only when the upstream sends: events held by a stall go out with the first bytes the upstream
sends once the stall is over, or at the stream's end.

Every fault is said on its flow: marked (a cut, a stall, a repeat: ``MARKS``), a sentence in its comment, and the
facts in ``flow.metadata["sse_faults"]``. Failure policy, as the SSEResume addon's: no hook or stream callable lets
an error out; a flow whose fault injection fails goes on untouched (held events included), and it is logged once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from mitmproxy import command, ctx, exceptions, flowfilter, hooks, http, optmanager
from mitmproxy import flow as mflow
from mitmproxy.addonmanager import Loader
from mitmproxy.utils import typecheck

from sse_resume_core._config import ConfigError, FaultSettings, fault_mitmproxy_options, fault_settings
from sse_resume_core._logsafe import safe_traceback
from sse_resume_core._parser import DEFAULT_MAX_SIZE, BlockKind, SSEParser

__all__ = ["FAULT_OPTIONS", "MARKS", "Fault", "Injector", "SSEFaults", "StreamState"]

log = logging.getLogger("sse_resume.faults")

PREFIX: Final = "sse_fault_"
FAULT_OPTIONS: Final = tuple(PREFIX + name for name in FaultSettings.model_fields)
"""The options this addon registers (the SSEResume addon's check of ``--set`` values leaves them to it)."""

MARKS: Final = {"cut": ":scissors:", "stall": ":hourglass:", "repeat": ":repeat:"}
"""The mark a flow gets for the last fault injected into it."""

MAX_HELD: Final = 8 * 1024 * 1024
"""Bytes a stall holds per stream, at most: past them it ends early (a proxy cannot hold back the upstream)."""

SSE_TYPE: Final = "text/event-stream"

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


class StreamState(Protocol):
    """What this addon reads of the SSEResume addon's state of a flow (its ``FlowState``)."""

    @property
    def session(self) -> str: ...

    @property
    def note(self) -> str: ...


StreamCallable = Callable[[bytes], Iterable[bytes] | bytes]


class _Stream:
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


class SSEFaults:
    """The fault injection addon. ``flow_state`` finds the SSEResume addon's state of a flow by its id (or None):
    the session a stream belongs to, and the sentence that addon keeps in its comment."""

    def __init__(self, flow_state: Callable[[str], StreamState | None] = lambda _: None) -> None:
        self._flow_state = flow_state
        self.settings = FaultSettings()
        self._filter: flowfilter.TFilter | None = None
        self._streams: dict[str, _Stream] = {}  # flow id -> the open SSE response
        self.injected: dict[str, int] = dict.fromkeys(MARKS, 0)
        self._running = False
        self._configured = False
        self._cannot_cut = False  # said once: this mitmproxy has no connection handler to close

    # -- options ---------------------------------------------------------------------------------------------

    def load(self, loader: Loader) -> None:
        for name, typ, default, help_text in fault_mitmproxy_options():  # (their model: FaultSettings)
            loader.add_option(name, typ, default, help_text)
        for error in _deferred_errors(loader.master.options):
            log.error("sse-resume: invalid option: %s", error)  # (this stops mitmproxy at startup, as intended)

    def configure(self, updated: set[str]) -> None:
        first, self._configured = not self._configured, True
        if not updated & set(FAULT_OPTIONS):
            return
        try:
            settings = fault_settings(
                {name: getattr(ctx.options, PREFIX + name) for name in FaultSettings.model_fields}
            )
            try:
                matcher = flowfilter.parse(settings.filter) if settings.filter else None
            except ValueError as e:
                raise ConfigError(f"sse_fault_filter: {e}") from None
        except ConfigError as e:
            if first and not self._running:  # at startup: a clear line that stops mitmproxy (see SSEResume)
                log.error("sse-resume: invalid option: %s", e)
                return
            raise exceptions.OptionsError(str(e)) from None  # type: ignore[no-untyped-call]
        was = self.settings
        self.settings, self._filter = settings, matcher
        if self._running and settings != was:
            self._say_schedules()

    def running(self) -> None:
        self._running = True
        if self.settings.active:
            self._say_schedules()

    def done(self) -> None:
        for stream in self._streams.values():
            if stream.timer is not None:
                stream.timer.cancel()
        self._running = False

    def _schedules(self) -> str:
        defaults = FaultSettings()
        set_ = [
            f"{PREFIX}{name}={getattr(self.settings, name)}"
            for name in FaultSettings.model_fields
            if getattr(self.settings, name) != getattr(defaults, name)
        ]
        return ", ".join(set_) if set_ else "none"

    def _say_schedules(self) -> None:
        if self.settings.active:
            log.warning(
                "sse-resume: injecting faults into SSE streams, on purpose: %s (for SSE responses that begin from "
                "now on)",
                self._schedules(),
            )
        else:
            log.info("sse-resume: no fault scheduled (the commands sse.cut and sse.cut.session still cut)")

    # -- hooks -----------------------------------------------------------------------------------------------

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        try:
            self._responseheaders(flow)
        except Exception as e:
            log.error(
                "sse-resume: internal error in fault injection on %s; it goes on without faults\n%s",
                flow.id,
                safe_traceback(e),
            )
            self._streams.pop(flow.id, None)

    def _responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None or not response.stream or response.status_code != 200 or not _is_sse(response):
            return  # (a response that is not streamed is sent whole: there is no stream to break)
        stream = _Stream(flow)
        settings = self.settings
        if settings.active and (self._filter is None or self._filter(flow)):
            if (settings.cut_after or settings.cut_every) and self._handler(flow.client_conn.id) is None:
                # (a cut that cannot be made must not drop what follows its event: the stream is not cut at all)
                settings = settings.model_copy(update={"cut_after": 0, "cut_every": 0})
            stream.settings = settings
            stream.injector = Injector(
                cut_after=settings.cut_after,
                stall_after=settings.stall_after,
                stall_for=float(settings.stall_for),
                repeat_after=settings.repeat_after,
                max_event_bytes=getattr(ctx.options, "sse_max_event_bytes", DEFAULT_MAX_SIZE),
            )
            inner = response.stream if callable(response.stream) else None
            response.stream = self._faulty(stream, inner)
            if settings.cut_every:
                stream.timer = asyncio.get_running_loop().call_later(
                    settings.cut_every, self._timed_cut, flow.id, settings.cut_every
                )
        self._streams[flow.id] = stream

    def response(self, flow: http.HTTPFlow) -> None:
        self._end(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._end(flow)  # (a cut, as any client that leaves, ends here)

    def _end(self, flow: http.HTTPFlow) -> None:
        try:
            stream = self._streams.pop(flow.id, None)
            if stream is None:
                return
            if stream.timer is not None:
                stream.timer.cancel()
            i = stream.injector
            if i is not None:
                i.stop(time.monotonic())  # (a clean end has sent what a stall held already)
                if stream.cut is not None and i.after_cut and flow.response is not None:
                    # The flow shows what its client got: the events relayed after the cut are in the history
                    # (the client resumes them), not on this connection.
                    flow.response.raw_content = _without_last_events(flow.response.raw_content or b"", i.after_cut)
            if stream.last is not None:
                self._annotate(stream)  # again, after the SSEResume addon's last word on the flow
        except Exception as e:
            log.error("sse-resume: internal error in fault injection at the end of %s\n%s", flow.id, safe_traceback(e))

    # -- the stream callable ---------------------------------------------------------------------------------

    def _faulty(self, stream: _Stream, inner: StreamCallable | None) -> StreamCallable:
        """The stream callable: ``inner`` (the SSEResume addon's, or none: the bytes as they come), faults on top."""
        injector = stream.injector
        assert injector is not None

        def faulty(chunk: bytes) -> Iterable[bytes] | bytes:
            result: Iterable[bytes] | bytes = ()
            try:
                result = inner(chunk) if inner is not None else (chunk or ())
                if stream.broken:
                    return result
                return self._inject(stream, injector, result, not chunk)
            except Exception as e:  # not expected: the stream goes on untouched, with what a stall held
                stream.broken = True
                log.error(
                    "sse-resume: internal error in fault injection on %s; it goes on without faults\n%s",
                    stream.flow.id,
                    safe_traceback(e),
                )
                held = injector.take_held()
                parts = [result] if isinstance(result, bytes) else list(result)
                return [held, *parts] if held else parts

        return faulty

    def _inject(self, stream: _Stream, injector: Injector, result: Iterable[bytes] | bytes, end: bool) -> list[bytes]:
        parts = [result] if isinstance(result, bytes) else list(result)
        now = time.monotonic()
        out: list[bytes] = []
        faults: list[Fault] = []
        for part in parts:
            if not part:  # an empty chunk ends an HTTP/1 response: what a stall holds goes first (none after a cut)
                if not injector.done:
                    if held := injector.finish(now):
                        out.append(held)
                    out.append(part)
                continue
            data, made = injector.feed(part, now)
            if data:
                out.append(data)
            faults += made
        if not parts and not injector.done and (released := injector.feed(b"", now)[0]):
            out.append(released)  # (the stall is over: what it held goes out with this chunk)
        if end and not injector.done and (held := injector.finish(now)):
            out.append(held)
        if faults:
            self._injected(stream, faults)
        return out

    def _injected(self, stream: _Stream, faults: list[Fault]) -> None:
        """Say what the stream callable did; a cut is made once what it returns is written (soon after)."""
        loop = asyncio.get_running_loop()
        for fault in faults:
            if fault.kind == "cut":
                loop.call_soon(self._cut, stream, fault)  # (counted and said there)
                continue
            self.injected[fault.kind] += 1
            stream.last = fault.kind
            if fault.kind == "stall":
                flow_id, events, by = stream.flow.id[:8], fault.events, fault.by
                log.info("sse-resume: fault: stalled flow %s after %d events (%s)", flow_id, events, by)
        if stream.last is not None and stream.cut is None:
            self._annotate(stream)
            loop.call_soon(self._show, [stream.flow])

    # -- cutting ---------------------------------------------------------------------------------------------

    def _timed_cut(self, flow_id: str, seconds: int) -> None:
        try:
            stream = self._streams.get(flow_id)
            if stream is not None:
                self._cut_streams([stream], f"sse_fault_cut_every={seconds}")
        except Exception as e:
            log.error("sse-resume: internal error cutting %s\n%s", flow_id, safe_traceback(e))

    def _cut_streams(self, streams: list[_Stream], by: str) -> list[_Stream]:
        """Cut each stream's client connection (once per connection); the streams that broke."""
        broken: list[_Stream] = []
        for stream in streams:
            if stream.cut is None and (made := self._cut(stream, stream.fault(by))):
                broken += made
        return broken

    def _cut(self, stream: _Stream, fault: Fault) -> list[_Stream]:
        """Close the stream's client connection now; the streams that broke (every open one of that connection;
        none when it is gone already)."""
        client_id = stream.flow.client_conn.id
        handler = self._handler(client_id)
        if handler is None or stream.cut is not None:
            return []
        others = [s for s in self._streams.values() if s.flow.client_conn.id == client_id and s.cut is None]
        broken = [stream, *(s for s in others if s is not stream)]
        for s in broken:
            s.cut = fault if s is stream else s.fault(f"{fault.by}, on the connection of flow {stream.flow.id[:8]}")
            s.last = "cut"
            if s.injector is not None:
                s.injector.done = True  # nothing more is sent
            self.injected["cut"] += 1
            self._annotate(s)
            log.info(
                "sse-resume: fault: cut the client connection of flow %s%s (%s)",
                s.flow.id[:8],
                f" after {s.cut.events} events" if s.cut.events else "",
                s.cut.by,
            )
        handler.close_connection(handler.client)
        self._show([s.flow for s in broken])
        return broken

    def _handler(self, client_id: str) -> Any:
        """mitmproxy's handler of a live client connection (None when it is gone). Not a documented API: where a
        mitmproxy lacks it, that is said once, and nothing is cut."""
        server = ctx.master.addons.get("proxyserver")  # type: ignore[no-untyped-call]
        connections = getattr(server, "connections", None)
        if not isinstance(connections, dict):
            if not self._cannot_cut:
                self._cannot_cut = True
                log.warning("sse-resume: this mitmproxy keeps no table of connections: streams cannot be cut")
            return None
        handler = connections.get(client_id)
        client = getattr(handler, "client", None)
        if handler is None or not hasattr(handler, "close_connection") or client not in handler.transports:
            return None
        return handler

    # -- commands --------------------------------------------------------------------------------------------

    @command.command("sse.cut")  # type: ignore[untyped-decorator]
    def cut_command(self, flows: Sequence[mflow.Flow]) -> str:
        """Cut the client connections of these open SSE streams now, as a network failure would: each client sees
        its connection break and reconnects with Last-Event-ID. (On HTTP/2, every stream of the connection.)"""
        streams = [self._streams[f.id] for f in flows if f.id in self._streams]
        broken = self._cut_streams(streams, "command sse.cut")
        if not broken:
            n = len(flows)
            return f"no open SSE stream among the {n} flow{'s' if n != 1 else ''} given: nothing cut"
        return _said_cut(broken)

    @command.command("sse.cut.session")  # type: ignore[untyped-decorator]
    def cut_session_command(self, session: str) -> str:
        """Cut the client connections of every open SSE stream of one session now: a session key or its first
        characters (as sse.sessions shows them), or the value of the session header (as Mcp-Session-Id)."""
        wanted = session.strip()
        if not wanted:
            raise exceptions.CommandError("name a session: its key as sse.sessions shows it, or its session header")
        header = getattr(ctx.options, "sse_session_header", "mcp-session-id")
        streams = [s for s in self._streams.values() if s.flow.request.headers.get(header) == wanted]
        if not streams:
            keys: dict[str, list[_Stream]] = {}
            for s in self._streams.values():
                state = self._flow_state(s.flow.id)
                if state is not None and state.session and state.session.startswith(wanted):
                    keys.setdefault(state.session, []).append(s)
            if len(keys) > 1:
                raise exceptions.CommandError(
                    f"{len(keys)} sessions with open streams begin with {wanted!r}: give more of the key"
                )
            streams = next(iter(keys.values()), [])
        if not streams:
            raise exceptions.CommandError(
                f"no open SSE stream of a session {wanted!r} (sse.sessions lists the sessions held)"
            )
        broken = self._cut_streams(streams, "command sse.cut.session")
        return _said_cut(broken) if broken else "the connections of that session's streams are cut already"

    @command.command("sse.faults")  # type: ignore[untyped-decorator]
    def faults_command(self) -> str:
        """What is scheduled (the sse_fault_ options), the SSE streams open, and the faults injected so far."""
        n = len(self._streams)
        armed = sum(1 for s in self._streams.values() if s.injector is not None and not s.broken)
        done = ", ".join(f"{count} {kind}{'s' if count != 1 else ''}" for kind, count in self.injected.items())
        return (
            f"scheduled: {self._schedules()}; {n} open SSE stream{'s' if n != 1 else ''} "
            f"({armed} following the schedules); injected so far: {done}"
        )

    # -- saying it on the flow -------------------------------------------------------------------------------

    def _annotate(self, stream: _Stream) -> None:
        """Mark the flow for its last fault, and put this addon's sentence in its comment, before the SSEResume
        addon's own (which that addon replaces at the comment's end as it says more)."""
        flow = stream.flow
        sentence = stream.sentence()
        state = self._flow_state(flow.id)
        flow.comment = _placed(flow.comment, stream.said, sentence, state.note if state is not None else "")
        stream.said = sentence
        if stream.last is not None:
            flow.marked = MARKS[stream.last]
        flow.metadata["sse_faults"] = stream.facts()

    @staticmethod
    def _show(flows: list[http.HTTPFlow]) -> None:
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


def _said_cut(streams: list[_Stream]) -> str:
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


def _deferred_errors(options: optmanager.OptManager) -> list[str]:
    """The wrong values waiting for this addon's options (``--set``, config.yaml), each one dropped.

    mitmproxy converts them after every addon of the script has loaded, and a wrong one then unloads the script
    without a word; the SSEResume addon checks its own options' values the same way, and leaves these to this."""
    errors: list[str] = []
    try:  # mitmproxy's internals: where they moved, its own conversion (silent on errors) is all there is
        registered, unconverted, parse = options._options, optmanager._UnconvertedStrings, options._parse_setval
    except AttributeError:
        return errors
    for name in FAULT_OPTIONS:
        if name not in options.deferred:
            continue
        value = options.deferred[name]
        try:
            if isinstance(value, unconverted):
                value = parse(registered[name], value.val)
            typecheck.check_option_type(name, value, registered[name].typespec)
        except exceptions.OptionsError as e:
            del options.deferred[name]
            errors.append(str(e))
        except TypeError as e:
            del options.deferred[name]
            errors.append(f"{name}: {e} (from mitmproxy's config.yaml)")
    return errors

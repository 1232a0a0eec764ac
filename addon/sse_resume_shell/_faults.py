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
from collections.abc import Callable, Iterable
from typing import Final

from mitmproxy import ctx, exceptions, flowfilter, http
from mitmproxy.addonmanager import Loader

from sse_resume_core._config import ConfigError, FaultSettings, fault_mitmproxy_options, fault_settings
from sse_resume_core._logsafe import safe_traceback
from sse_resume_core._parser import DEFAULT_MAX_SIZE
from sse_resume_shell._cuts import SSECuts
from sse_resume_shell._faultstream import (
    MARKS,
    Stream,
    StreamCallable,
    StreamState,
    _is_sse,
    _without_last_events,
    show,
)
from sse_resume_shell._features import deferred_errors
from sse_resume_shell._inject import Fault, Injector

__all__ = ["FAULT_OPTIONS", "PREFIX", "SSEFaults"]

log = logging.getLogger("sse_resume.faults")

PREFIX: Final = "sse_fault_"
FAULT_OPTIONS: Final = tuple(PREFIX + name for name in FaultSettings.model_fields)
"""The options this addon registers (the SSEOptions addon's check of ``--set`` values leaves them to it)."""


class SSEFaults:
    """The fault injection addon. ``flow_state`` finds the SSEResume addon's state of a flow by its id (or None):
    the session a stream belongs to, and the sentence that addon keeps in its comment."""

    def __init__(self, flow_state: Callable[[str], StreamState | None] = lambda _: None) -> None:
        self.flow_state = flow_state
        self.settings = FaultSettings()
        self._filter: flowfilter.TFilter | None = None
        self.streams: dict[str, Stream] = {}  # flow id -> the open SSE response
        self.injected: dict[str, int] = dict.fromkeys(MARKS, 0)
        self._running = False
        self._configured = False
        self.cuts = SSECuts(self)
        self.addons = [self.cuts]  # (mitmproxy calls its hooks and collects its commands as this addon's)

    # -- options ---------------------------------------------------------------------------------------------

    def load(self, loader: Loader) -> None:
        for name, typ, default, help_text in fault_mitmproxy_options():  # (their model: FaultSettings)
            loader.add_option(name, typ, default, help_text)
        for error in deferred_errors(loader.master.options, FAULT_OPTIONS):
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
            if first and not self._running:  # at startup: a clear line that stops mitmproxy (see SSEOptions)
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
        for stream in self.streams.values():
            if stream.timer is not None:
                stream.timer.cancel()
        self._running = False

    def schedules(self) -> str:
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
                self.schedules(),
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
            self.streams.pop(flow.id, None)

    def _responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None or not response.stream or response.status_code != 200 or not _is_sse(response):
            return  # (a response that is not streamed is sent whole: there is no stream to break)
        stream = Stream(flow)
        settings = self.settings
        if settings.active and (self._filter is None or self._filter(flow)):
            if (settings.cut_after or settings.cut_every) and self.cuts.handler(flow.client_conn.id) is None:
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
                    settings.cut_every, self.cuts.timed_cut, flow.id, settings.cut_every
                )
        self.streams[flow.id] = stream

    def response(self, flow: http.HTTPFlow) -> None:
        self._end(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._end(flow)  # (a cut, as any client that leaves, ends here)

    def _end(self, flow: http.HTTPFlow) -> None:
        try:
            stream = self.streams.pop(flow.id, None)
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
                self.annotate(stream)  # again, after the SSEResume addon's last word on the flow
        except Exception as e:
            log.error("sse-resume: internal error in fault injection at the end of %s\n%s", flow.id, safe_traceback(e))

    # -- the stream callable ---------------------------------------------------------------------------------

    def _faulty(self, stream: Stream, inner: StreamCallable | None) -> StreamCallable:
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

    def _inject(self, stream: Stream, injector: Injector, result: Iterable[bytes] | bytes, end: bool) -> list[bytes]:
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

    def _injected(self, stream: Stream, faults: list[Fault]) -> None:
        """Say what the stream callable did; a cut is made once what it returns is written (soon after)."""
        loop = asyncio.get_running_loop()
        for fault in faults:
            if fault.kind == "cut":
                loop.call_soon(self.cuts.cut, stream, fault)  # (counted and said there)
                continue
            self.injected[fault.kind] += 1
            stream.last = fault.kind
            if fault.kind == "stall":
                flow_id, events, by = stream.flow.id[:8], fault.events, fault.by
                log.info("sse-resume: fault: stalled flow %s after %d events (%s)", flow_id, events, by)
        if stream.last is not None and stream.cut is None:
            self.annotate(stream)
            loop.call_soon(show, [stream.flow])

    def annotate(self, stream: Stream) -> None:
        """Say the stream's faults on its flow, before the SSEResume addon's sentence."""
        state = self.flow_state(stream.flow.id)
        stream.annotate(state.note if state is not None else "")

    def _timed_cut(self, flow_id: str, seconds: int) -> None:
        self.cuts.timed_cut(flow_id, seconds)  # (what the timer of sse_fault_cut_every calls)

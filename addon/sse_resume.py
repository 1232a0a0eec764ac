"""sse-resume: a mitmproxy addon that makes Server-Sent Events streams resumable.

    mitmdump -s addon/sse_resume.py [--set sse_support_replay=false ...]

A client that reconnects with ``Last-Event-ID`` gets the events it missed from the proxy's history, once each and
in order, then the live stream; duplicates an upstream resends are dropped. This file is the thin mitmproxy shell:
every decision is made by ``sse_resume_core``, which knows nothing of mitmproxy.

Failure policy: the addon must never cost a byte of traffic. Every hook and the stream callable catch their own
errors, log them once with the flow's context, and fall back to plain pass-through for that flow.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterable
from typing import Any, Optional

from mitmproxy import exceptions, http
from mitmproxy.addonmanager import Loader

from sse_resume_core import HistoryLimits, MemoryHistory
from sse_resume_core._config import ConfigError, Settings, load_file, merge
from sse_resume_core._resume import Decision, Relay, Resumer, digest, session_key

log = logging.getLogger("sse_resume")

SSE_TYPE = "text/event-stream"
RESULT_HEADER = "sse-resume"

# option name -> (type, help). Defaults come from the Settings model, so there is one source of truth.
OPTIONS: dict[str, tuple[type, str]] = {
    "session_header": (str, "Request header that names the client's session (MCP: mcp-session-id)."),
    "max_event_history": (int, "Events kept per session for replay and deduplication; oldest evicted first."),
    "event_ttl": (int, "Seconds an event is kept; a session idle this long is dropped whole."),
    "support_replay": (
        bool,
        "Keep event payloads and answer reconnects from them. false keeps ids only: reconnects are forwarded "
        "upstream with the right Last-Event-ID and deduplicated, nothing is replayed by the proxy.",
    ),
    "dedupe_window": (int, "Event ids remembered per client connection, to drop repeats within it."),
    "stale_policy": (
        str,
        "What to do with a Last-Event-ID that is not in history: 'forward' passes it upstream unchanged, "
        "'restart' drops it so the upstream starts a fresh stream. Either way the client is told.",
    ),
    "max_event_bytes": (int, "Largest event (bytes) parsed and kept; larger ones pass through untouched."),
    "max_sessions": (int, "Sessions kept across the proxy; the least recently used is dropped first."),
    "max_history_bytes": (int, "Bytes of history kept across all sessions; oldest events of idle sessions go first."),
    "replay_mode": (
        str,
        "How missed events are served. 'response': at once, as a complete response ending with a short retry, "
        "so the client reconnects for the live stream (EventSource and MCP clients do). 'inline': in front of the "
        "live upstream stream, in one response, once the upstream sends its first bytes. 'auto': 'response' for "
        "clients that accept text/event-stream, 'inline' for the others (curl).",
    ),
    "replay_retry": (int, "retry (ms) sent at the end of a replay, so the client comes straight back for live events."),
    "default_retry": (int, "retry (ms) restored after a replay when the upstream never sent one."),
}


class FlowState:
    """What the addon knows about one flow.

    (A plain class: mitmproxy loads this script without registering it in sys.modules, where ``dataclasses``
    looks up string annotations.)
    """

    __slots__ = ("decision", "failed", "relay", "session")

    def __init__(self, session: str) -> None:
        self.session = session
        self.decision: Decision | None = None
        self.relay: Relay | None = None
        self.failed = False


class _Decoder:
    """Incremental Content-Encoding decoder for a compressed SSE response."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._feed: Callable[[bytes], bytes]
        self._flush: Callable[[], bytes]
        if encoding in ("gzip", "x-gzip", "deflate"):
            d = zlib.decompressobj(47 if encoding != "deflate" else zlib.MAX_WBITS)
            self._feed, self._flush = d.decompress, d.flush
        elif encoding == "br":
            import brotli

            b = brotli.Decompressor()
            self._feed, self._flush = b.process, lambda: b""
        elif encoding == "zstd":
            import zstandard

            z = zstandard.ZstdDecompressor().decompressobj()
            self._feed, self._flush = z.decompress, z.flush
        else:
            raise ValueError(encoding)

    def __call__(self, chunk: bytes) -> bytes:
        return self._feed(chunk) if chunk else self._flush()


def is_sse(message: http.Message | None) -> bool:
    return message is not None and message.headers.get("content-type", "").lower().startswith(SSE_TYPE)


def wants_sse(request: http.Request) -> bool:
    return SSE_TYPE in request.headers.get("accept", "").lower() or "last-event-id" in request.headers


class SSEResume:
    def __init__(self) -> None:
        self.settings = Settings()
        self.store = MemoryHistory(self.settings.limits())
        self.resumer = self._resumer()
        self._flows: dict[str, FlowState] = {}

    # -- options ---------------------------------------------------------------------------------------------

    def load(self, loader: Loader) -> None:
        defaults = Settings()
        for name, (typ, help_text) in OPTIONS.items():
            default = getattr(defaults, name)
            loader.add_option(f"sse_{name}", typ, default, help_text)
        loader.add_option(
            "sse_config",
            Optional[str],  # type: ignore[arg-type]  # noqa: UP045 (mitmproxy wants typing.Optional)
            None,
            "YAML file with settings under 'sse:' (the 'client_resilience' shape, or option names without sse_). "
            "Options given with --set win over the file.",
        )

    def configure(self, updated: set[str]) -> None:
        from mitmproxy import ctx

        if not any(name.startswith("sse_") for name in updated):
            return
        options = ctx.options
        try:
            file_values = load_file(options.sse_config) if options.sse_config else {}
            settings = merge(file_values, {name: getattr(options, f"sse_{name}") for name in OPTIONS})
        except ConfigError as e:
            raise exceptions.OptionsError(str(e)) from None  # type: ignore[no-untyped-call]
        self._apply(settings)

    def _apply(self, settings: Settings) -> None:
        old = self.settings
        self.settings = settings
        limits = settings.limits()
        if limits != self.store.limits:
            if limits.replay != old.support_replay:
                self.store = MemoryHistory(limits)  # a change of mode starts a new history
            else:
                self.store.reconfigure(limits)
        self.resumer = self._resumer()

    def _resumer(self) -> Resumer:
        s = self.settings
        return Resumer(
            self.store,
            replay=s.support_replay,
            stale_policy=s.stale_policy,
            dedupe_window=s.dedupe_window,
            max_event_bytes=s.max_event_bytes,
            replay_retry=s.replay_retry,
            default_retry=s.default_retry,
        )

    # -- hooks -----------------------------------------------------------------------------------------------

    def _session_of(self, request: http.Request) -> str:
        h = request.headers
        credentials = [h.get(name, "") for name in ("authorization", "cookie")]
        return session_key(
            h.get(self.settings.session_header), request.scheme, request.host, request.port, request.path, credentials
        )

    async def request(self, flow: http.HTTPFlow) -> None:
        try:
            await self._request(flow)
        except Exception:
            log.exception("sse-resume: internal error on request %s; passing it through untouched", flow.id)
            self._flows.pop(flow.id, None)

    async def _request(self, flow: http.HTTPFlow) -> None:
        request = flow.request
        if flow.response is not None or not wants_sse(request):
            return
        state = self._flows[flow.id] = FlowState(self._session_of(request))
        if "accept-encoding" in request.headers:
            request.headers["accept-encoding"] = "identity"  # frames must arrive as text to be read
        last_event_id = request.headers.get("last-event-id")
        if request.method != "GET" or last_event_id is None:
            return
        mode = self.settings.replay_mode
        inline = mode == "inline" or (mode == "auto" and SSE_TYPE not in request.headers.get("accept", "").lower())
        decision = await self.resumer.decide(state.session, last_event_id, inline)
        state.decision = decision
        log.info(
            "sse-resume: session %s: %s (%s), id %s",
            state.session[:12],
            decision.outcome,
            decision.note,
            digest(last_event_id, 6),
        )
        flow.metadata["sse_resume"] = {"outcome": decision.outcome, "note": decision.note}
        if decision.body:
            flow.response = http.Response.make(
                200,
                decision.body,
                {"content-type": SSE_TYPE, "cache-control": "no-cache", RESULT_HEADER: "hit"},
            )
            del self._flows[flow.id]
        elif decision.forward_id is None:
            del request.headers["last-event-id"]
        elif decision.forward_id != last_event_id:
            request.headers["last-event-id"] = decision.forward_id

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        try:
            self._responseheaders(flow)
        except Exception:
            log.exception("sse-resume: internal error on response %s; passing it through untouched", flow.id)
            self._flows.pop(flow.id, None)
            if flow.response is not None and is_sse(flow.response):
                flow.response.stream = True

    def _responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if not is_sse(response):
            self._flows.pop(flow.id, None)
            return
        assert response is not None
        state = self._flows.get(flow.id)
        if state is None:
            state = self._flows[flow.id] = FlowState(self._session_of(flow.request))
        decision = state.decision or Decision("fresh", state.session)
        if decision.outcome != "fresh":
            response.headers[RESULT_HEADER] = decision.outcome + ("; inline" if decision.outcome == "hit" else "")
        decoder: _Decoder | None = None
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            try:
                decoder = _Decoder(encoding)
            except (ValueError, ImportError):
                log.warning("sse-resume: %s: cannot decode %r; passing the stream through", flow.id, encoding)
                response.stream = True
                del self._flows[flow.id]
                return
            del response.headers["content-encoding"]
            response.headers.pop("content-length", None)
        if response.status_code != 200:
            response.stream = True
            return
        state.relay = self.resumer.open(decision)
        response.stream = self._callable(flow.id, state, decoder)

    def _callable(
        self, flow_id: str, state: FlowState, decoder: _Decoder | None
    ) -> Callable[[bytes], Iterable[bytes] | bytes]:
        relay = state.relay
        assert relay is not None

        def stream(chunk: bytes) -> Iterable[bytes] | bytes:
            data = chunk
            if decoder is not None:
                try:
                    data = decoder(chunk)
                except Exception:
                    if not state.failed:
                        log.warning(
                            "sse-resume: %s: the %s body does not decode; forwarding it as is",
                            flow_id,
                            decoder.encoding,
                        )
                    state.failed = True
            if state.failed:
                out = data
            else:
                out = relay.feed(data) if chunk else relay.close()
                if relay.failed is not None:
                    state.failed = True
                    log.error(
                        "sse-resume: internal error relaying %s (session %s); passing the rest through",
                        flow_id,
                        state.session[:12],
                        exc_info=relay.failed,
                    )
            # An empty bytes object would end an HTTP/1 response: hand back an empty list instead.
            return out if out else []

        return stream

    def response(self, flow: http.HTTPFlow) -> None:
        self._flows.pop(flow.id, None)

    def error(self, flow: http.HTTPFlow) -> None:
        self._flows.pop(flow.id, None)

    # -- for tests and commands ------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        snap = self.store.snapshot()
        r = self.resumer.stats
        return {
            "sessions": snap.sessions,
            "events": snap.events,
            "bytes": snap.bytes,
            "stored": snap.stored,
            "evicted": dict(snap.evicted),
            "hits": r.hits,
            "misses": r.misses,
            "up_to_date": r.up_to_date,
            "behind": r.behind,
            "replayed": r.replayed,
        }


addons = [SSEResume()]

__all__ = ["HistoryLimits", "SSEResume", "addons"]

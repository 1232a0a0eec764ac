"""sse-resume: a mitmproxy addon that makes Server-Sent Events streams resumable.

    mitmdump -s addon/sse_resume.py [--set sse_support_replay=false ...]

A client that reconnects with ``Last-Event-ID`` gets the events it missed from the proxy's history, once each and
in order, then the live stream; duplicates an upstream resends are dropped. This file is the thin mitmproxy shell:
every decision is made by ``sse_resume_core``, which knows nothing of mitmproxy.

Failure policy: the addon must never cost a byte of traffic. Every hook and the stream callable catch their own
errors, log them once with the flow's context, and fall back to plain pass-through for that flow.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import functools
import hashlib
import importlib
import importlib.util
import logging
import shlex
import ssl
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Optional

from mitmproxy import command, contentviews, exceptions, hooks, http, optmanager
from mitmproxy.addonmanager import Loader
from mitmproxy.utils import typecheck

from sse_resume_core import HistoryLimits, MemoryHistory
from sse_resume_core._config import (
    DEFAULT,
    ConfigError,
    Settings,
    effective,
    load_file,
    mitmproxy_options,
    section_values,
    shown,
)
from sse_resume_core._decode import Decoder, UnsupportedEncoding, decoder_for
from sse_resume_core._identity import IdentityRule, request_identity
from sse_resume_core._keep import Backoff
from sse_resume_core._logsafe import id_digest, redact_url, safe_traceback, withheld
from sse_resume_core._mcp import treatment
from sse_resume_core._resume import Charge, Decision, Relay, ReplayBudget, Resumer, ResumeStats, describe
from sse_resume_core._store import HistoryStore, open_store
from sse_resume_core._view import Transcript, TranscriptBudget, render_events
from sse_resume_keep import TICKET_HEADER, Keeper, KeepReport, KeepSettings, UpstreamRequest, insecure_context
from sse_resume_shell import FAULT_OPTIONS, SSEFaults

if TYPE_CHECKING:  # imported only when an option asks for it (see FEATURES)
    from prometheus_client.core import Metric

log = logging.getLogger("sse_resume")

SSE_TYPE = "text/event-stream"
RESULT_HEADER = "sse-resume"

MARK = ":arrows_counterclockwise:"
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "content-length"})
MAX_ENDPOINTS = 1000
FLUSH_EVERY = 0.05  # seconds: the longest an event relayed waits to be recorded (see Relay.flush)
LIVE_EVERY = 0.95  # seconds, at least, between two refreshes of open flows: about once a second, on the flush timer
# (never more than a second apart while the loop keeps time; see SSEResume._refresh_live)
TLS_OPTIONS = {"ssl_insecure", "ssl_verify_upstream_trusted_ca", "ssl_verify_upstream_trusted_confdir"}

# Packages only some options need: option -> (module imported, what to install, the feature). Without them the
# addon loads and resumes with mitmproxy and pydantic alone; asking for the feature without its package is an
# option error that names the command installing it. (The requirements are pyproject.toml's extras.)
FEATURES: dict[str, tuple[str, str, str]] = {
    "store": ("sse_resume_redis", "redis>=5.0", "a Redis store"),
    "metrics_port": ("prometheus_client", "prometheus-client>=0.20", "the metrics endpoint"),
}


def install_command(requirement: str) -> str:
    """The command that installs ``requirement`` into the Python running this mitmproxy."""
    python = shlex.quote(sys.executable)
    quoted = shlex.quote(requirement)
    prefix = Path(sys.prefix)
    if (prefix / "pipx_metadata.json").is_file():  # a mitmproxy installed with pipx
        return f"pipx inject {shlex.quote(prefix.name)} {quoted}"
    if importlib.util.find_spec("pip") is not None:
        return f"{python} -m pip install {quoted}"
    return f"uv pip install --python {python} {quoted}"  # environments made by uv have no pip


def feature(option: str) -> ModuleType:
    """Import the package behind ``sse_<option>``; missing, an OptionsError naming the command that installs it."""
    module, requirement, what = FEATURES[option]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing = f"'{e.name}' is" if e.name and e.name != module else "it is"
        raise exceptions.OptionsError(  # type: ignore[no-untyped-call]
            f"sse_{option}: {what} needs the Python package {requirement}, and {missing} not installed in the "
            f"Python that runs mitmproxy ({sys.executable}): install it with: {install_command(requirement)}"
        ) from None


def deferred_errors(options: optmanager.OptManager, names: Iterable[str]) -> list[str]:
    """The wrong values mitmproxy holds for ``names`` until their addon registers them; each one is dropped.

    ``--set`` values (strings) and ``config.yaml`` values for options not yet registered wait in
    ``options.deferred``; mitmproxy converts them after the addon's ``load``, and an error there unloads the script
    without a word (mitmdump runs on, and SSE responses are buffered). Checked here instead, a wrong value is a
    message naming the option and the reason. Unknown ``sse_`` names are errors too (a typo would otherwise be
    ignored for good). The rest stay deferred for mitmproxy to apply.
    """
    known = set(names)
    errors: list[str] = []
    try:  # mitmproxy's internals: where they moved, its own conversion (silent on errors) is all there is
        registered, unconverted, parse = options._options, optmanager._UnconvertedStrings, options._parse_setval
    except AttributeError:
        log.warning("sse-resume: this mitmproxy's options cannot be checked before they apply")
        return errors
    for name, value in list(options.deferred.items()):
        if not name.startswith("sse_"):
            continue
        try:
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise exceptions.OptionsError(f"{name}: no such option{hint}")  # type: ignore[no-untyped-call]
            option = registered.get(name)
            if option is None:  # an option of another addon of this script, which checks it in its own load
                continue
            if isinstance(value, unconverted):  # from --set
                value = parse(option, value.val)
            typecheck.check_option_type(name, value, option.typespec)
        except exceptions.OptionsError as e:
            del options.deferred[name]
            errors.append(str(e))
        except TypeError as e:  # a value of another type, from a YAML file (its value may be a secret: not shown)
            del options.deferred[name]
            errors.append(f"{name}: {e} (from mitmproxy's config.yaml)")
    return errors


class FlowState:
    """What the addon knows about one flow.

    (A plain class: mitmproxy loads this script without registering it in sys.modules, where ``dataclasses``
    looks up string annotations.)
    """

    __slots__ = (
        "answered",
        "copy",
        "decision",
        "failed",
        "flow",
        "keep",
        "kept_outcome",
        "last_event_id",
        "note",
        "origin",
        "passed",
        "relay",
        "session",
        "shown",
        "stopped",
    )

    def __init__(self, session: str, flow: http.HTTPFlow | None = None) -> None:
        self.session = session
        self.flow = flow  # (for live updates of the open flow)
        self.decision: Decision | None = None
        self.relay: Relay | None = None
        self.failed = False
        self.last_event_id: str | None = None
        self.answered = False  # the addon made the response itself (a replay): later hooks leave it alone
        self.keep: str | None = None  # the keeper's ticket, when the keeper serves this flow
        self.origin: tuple[str, str, int, str | None] | None = None  # scheme, host, port, Host of a rerouted flow
        self.stopped = ""  # why the addon ended the response early (a compressed body it could not decode)
        self.copy: Transcript | None = None  # the transcript of a stream passed through untouched
        self.passed = ""  # why that stream was passed through
        self.shown = -1  # the transcript version last put on the open flow (see SSEResume._refresh_live)
        self.note = ""  # the addon's sentence in the flow's comment (replaced when the addon says more)
        self.kept_outcome = ""  # the keeper's outcome already said on the open flow


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


class MetricsCollector:
    """Reads the addon's counters when Prometheus scrapes: nothing is counted twice, nothing on the hot path.

    Labels carry no payload, id or credential: only eviction reasons.
    """

    def __init__(self, addon: SSEResume) -> None:
        self.addon = addon

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snap = self.addon.store.snapshot()
        r = self.addon.resume_stats
        for name, doc, value in (
            ("sse_resume_replay_hits", "Reconnects answered from history.", r.hits),
            ("sse_resume_replay_misses", "Reconnects whose Last-Event-ID was not held.", r.misses),
            ("sse_resume_up_to_date", "Reconnects forwarded upstream with nothing newer held.", r.up_to_date),
            ("sse_resume_events_replayed", "Events sent to clients from history.", r.replayed),
            ("sse_resume_events_deduplicated", "Events dropped because the client had them.", r.deduplicated),
            ("sse_resume_events_recorded", "Events recorded into the history.", snap.stored),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        evictions = CounterMetricFamily("sse_resume_evictions", "Events evicted from history.", labels=["reason"])
        for reason, count in snap.evicted.items():
            evictions.add_metric([reason], count)
        yield evictions
        yield GaugeMetricFamily("sse_resume_history_events", "Events held.", value=snap.events)
        yield GaugeMetricFamily("sse_resume_history_bytes", "Bytes held (estimate, errs high).", value=snap.bytes)
        yield GaugeMetricFamily("sse_resume_sessions", "Sessions held.", value=snap.sessions)
        budget = self.addon._budget
        yield GaugeMetricFamily(
            "sse_resume_replay_bytes_in_flight", "Bytes of replays built and not yet sent.", value=budget.held
        )
        yield CounterMetricFamily(
            "sse_resume_replays_shortened",
            "Replays served smaller because the in-flight bound was full.",
            value=budget.shortened,
        )
        keeper = self.addon.keeper
        if keeper is not None:
            k = keeper.stats
            kept = len(keeper.streams)
            yield GaugeMetricFamily("sse_resume_kept_streams", "Streams read by the proxy now.", value=kept)
            for name, doc, value in (
                ("sse_resume_kept_streams_started", "Streams kept so far.", k.kept),
                ("sse_resume_upstream_reconnects", "Kept streams' successful upstream reconnections.", k.reconnects),
                ("sse_resume_upstream_given_up", "Kept streams ended after their reconnection tries.", k.gave_up),
                ("sse_resume_keep_grace_expired", "Kept streams ended because no client came back.", k.grace_expired),
                ("sse_resume_keep_buffer_full", "Kept streams ended at their bounds.", k.buffer_full),
            ):
                yield CounterMetricFamily(name, doc, value=value)
        h = self.addon.store.health()
        if h is not None:
            yield GaugeMetricFamily("sse_resume_store_up", "1 when the Redis store answers.", value=int(h.up))
            yield GaugeMetricFamily("sse_resume_store_queued", "Events waiting for Redis.", value=h.queued)
            for name, doc, value in (
                ("sse_resume_store_writes", "Events written to Redis.", h.writes),
                ("sse_resume_store_failures", "Failed exchanges with Redis (timeouts, errors).", h.failures),
                ("sse_resume_store_dropped_writes", "Events given up while Redis was away too long.", h.dropped),
                ("sse_resume_store_fallbacks", "Lookups answered locally because Redis did not.", h.fallbacks),
            ):
                yield CounterMetricFamily(name, doc, value=value)


def is_sse(message: http.Message | None) -> bool:
    return message is not None and message.headers.get("content-type", "").lower().startswith(SSE_TYPE)


def wants_sse(request: http.Request) -> bool:
    return SSE_TYPE in request.headers.get("accept", "").lower() or "last-event-id" in request.headers


class SSEResume:
    def __init__(self) -> None:
        self.settings = Settings()
        self.store: HistoryStore = MemoryHistory(self.settings.limits())
        self.resume_stats = ResumeStats()
        self._unflushed: set[Relay] = set()  # relays with events to record, whichever resumer opened them
        self._budget = ReplayBudget(self.settings.max_replay_bytes, self.settings.max_replay_bytes_in_flight)
        # client connection id -> the replays made for it whose bytes mitmproxy may still hold (see _hold)
        self._charges: dict[str, list[Charge]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self.transcript_budget = TranscriptBudget(self.settings.transcript_total_bytes)
        self.live = False  # open flows show their transcripts as they grow (see sse_live_flows)
        self.resumer = self._resumer()
        self._flows: dict[str, FlowState] = {}
        self._metrics: tuple[Any, Any] | None = None  # (server, thread) of the Prometheus endpoint
        self._metrics_at: tuple[str, int] | None = None
        self._secret: bytes | None = None  # the key of session digests shared by proxies (with a Redis store)
        self._identity = IdentityRule()  # which headers tell users apart (see _session_of)
        self._closing: set[asyncio.Task[None]] = set()  # stores and keepers closing after a change of settings
        self.keeper: Keeper | None = None  # keep mode's server, while keep mode is on and the proxy runs
        # URLs seen answering text/event-stream: keep mode also keeps GETs to them that do not say they want SSE
        self._sse_endpoints: OrderedDict[tuple[str, str, int, str], None] = OrderedDict()
        self._running = False
        self._configured = False  # configure() ran once (the first follows the script's load)
        self.sources: dict[str, str] = dict.fromkeys(Settings.model_fields, DEFAULT)  # where each setting came from

    # -- options ---------------------------------------------------------------------------------------------

    def load(self, loader: Loader) -> None:
        contentviews.add(SSEContentview())
        for name, typ, default, help_text in mitmproxy_options():  # (one table: the Settings model)
            loader.add_option(name, typ, default, help_text)
        loader.add_option(
            "sse_config",
            Optional[str],  # type: ignore[arg-type]  # noqa: UP045 (mitmproxy wants typing.Optional)
            None,
            "YAML file with settings under 'sse:' (the 'client_resilience' shape, or option names without sse_). "
            "Options given with --set win over the file.",
        )
        names = [*(f"sse_{name}" for name in Settings.model_fields), "sse_config", *FAULT_OPTIONS]
        for error in deferred_errors(loader.master.options, names):
            # Logged as an error, which stops mitmdump, mitmproxy and mitmweb at startup ("Error logged during
            # startup"). Raising would not: mitmproxy's script loader drops an exception from here, and the addon.
            log.error("sse-resume: invalid option: %s", error)

    def configure(self, updated: set[str]) -> None:
        from mitmproxy import ctx

        options = ctx.options
        if self.keeper is not None and updated & TLS_OPTIONS:
            self.keeper.reconfigure(self._keep_settings())
        first, self._configured = not self._configured, True
        if not any(name.startswith("sse_") for name in updated):
            return
        try:
            # An "sse:" block in mitmproxy's config.yaml is no option: mitmproxy keeps it aside, unused, for good.
            block = section_values(options.deferred["sse"], "config.yaml") if "sse" in options.deferred else {}
            file_values = load_file(options.sse_config) if options.sse_config else {}
            settings, sources = effective(
                file_values, {name: getattr(options, f"sse_{name}") for name in Settings.model_fields}, block
            )
            for option in FEATURES:
                if getattr(settings, option) != Settings.model_fields[option].default:
                    feature(option)  # a missing package is refused before anything changes
        except (ConfigError, exceptions.OptionsError) as e:
            if first and not self._running:
                # The configure that follows the script's load, at startup: an error raised here reaches the user
                # as a traceback ("error in script"); one logged is a clear line, and stops mitmproxy all the same
                # ("Error logged during startup"). Later, a value is refused and the old one kept.
                log.error("sse-resume: invalid option: %s", e)
                return
            raise exceptions.OptionsError(str(e)) from None  # type: ignore[no-untyped-call]
        self._apply(settings)
        self.sources = sources

    def _apply(self, settings: Settings) -> None:
        old = self.settings
        self.settings = settings
        limits = settings.limits()
        where = (settings.store, settings.store_timeout)
        if (
            limits.replay != old.support_replay
            or where != (old.store, old.store_timeout)
            or (settings.store != "memory" and settings.store_secret != old.store_secret)
        ):
            self._replace_store(self._make_store(settings))  # a new mode or place starts a new history
        elif limits != self.store.limits:
            self.store.reconfigure(limits)
        self._identity = IdentityRule(settings.identity_headers, settings.session_header)
        self._budget.per_replay = settings.max_replay_bytes  # (the replays in flight stay counted)
        self._budget.in_flight = settings.max_replay_bytes_in_flight
        self._secret = None
        if settings.store != "memory":
            # Shared by every proxy on the store (a memory store keeps the process's own random key). A BLAKE2b
            # key is at most 64 bytes: any secret is hashed down to 32.
            self._secret = hashlib.blake2b((settings.store_secret or "sse-resume shared store").encode()).digest()[:32]
        self.transcript_budget.limit = settings.transcript_total_bytes
        if settings.transcript_total_bytes and self.transcript_budget.total > settings.transcript_total_bytes:
            self.transcript_budget.trim()
        # Reconfigured, not rebuilt: what it remembers (the retry to restore after a replay) outlives the change.
        self.resumer.reconfigure(
            store=self.store,
            replay=settings.support_replay,
            stale_policy=settings.stale_policy,
            dedupe_window=settings.dedupe_window,
            max_event_bytes=settings.max_event_bytes,
            replay_retry=settings.replay_retry,
            default_retry=settings.default_retry,
            transcript_bytes=settings.transcript_bytes,
        )
        self._serve_metrics()
        if self._running:
            self.live = self._wants_live()
            self._run_keeper()

    def _keep_settings(self) -> KeepSettings:
        from mitmproxy import ctx

        s = self.settings
        options = ctx.options
        if options.ssl_insecure:
            tls = insecure_context()
        else:
            # As mitmproxy verifies upstreams: its trusted CA file or directory, else the certifi bundle.
            ca, confdir = options.ssl_verify_upstream_trusted_ca, options.ssl_verify_upstream_trusted_confdir
            if ca is None and confdir is None:
                import certifi

                ca = certifi.where()
            try:
                tls = ssl.create_default_context(cafile=ca, capath=confdir)
            except (OSError, ssl.SSLError) as e:
                log.error(
                    "sse-resume: keep mode: cannot load the trusted CAs (%s); upstream certificates are checked "
                    "against the system's default ones",
                    e,
                )
                tls = ssl.create_default_context()
        tls.set_alpn_protocols(["http/1.1"])
        return KeepSettings(
            grace=float(s.keep_grace),
            max_events=s.max_event_history,
            max_bytes=s.keep_max_bytes,
            max_streams=s.keep_max_streams,
            max_queued_bytes=s.keep_max_queued_bytes,
            assign_ids=s.assign_ids,
            backoff=Backoff(tries=s.keep_max_tries),
            max_event_bytes=s.max_event_bytes,
            transcript_bytes=s.transcript_bytes,
            transcript_budget=self.transcript_budget,
            tls=tls,
        )

    def _run_keeper(self) -> None:
        """Start, reconfigure or stop the keeper to match the settings."""
        keeper = self.keeper
        if keeper is not None and (not self.settings.keep_upstream or keeper.store is not self.store):
            self.keeper = None
            self._spawn(keeper.aclose())
            keeper = None
        if not self.settings.keep_upstream:
            return
        if keeper is None:
            self.keeper = Keeper(self.resumer, self._keep_settings())
            try:
                self.keeper.start()
            except OSError as e:
                log.error("sse-resume: keep mode is off: the keeper cannot listen on 127.0.0.1 (%s)", e)
                self.keeper = None
        else:
            keeper.reconfigure(self._keep_settings())

    def _spawn(self, coro: Any) -> None:
        """Run ``coro`` (a close) in the background, keeping a reference until it is done."""
        task = asyncio.get_running_loop().create_task(coro)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @staticmethod
    def _make_store(settings: Settings) -> HistoryStore:
        if settings.store == "memory":
            return MemoryHistory(settings.limits())
        feature("store")  # without its package: the OptionsError naming the command that installs it
        log.info("sse-resume: history shared in Redis at %s", redact_url(settings.store))
        if not settings.store_secret:
            log.warning(
                "sse-resume: sse_store_secret is not set: session keys in Redis are digests with a well-known key, "
                "which anyone holding them can check against guessed session ids and credentials. Set the same "
                "secret on every proxy that shares this Redis."
            )
        return open_store(settings.store, settings.limits(), settings.store_timeout / 1000)

    def _replace_store(self, store: HistoryStore) -> None:
        old, self.store = self.store, store
        with contextlib.suppress(RuntimeError):  # no loop yet: the old store never started either
            asyncio.get_running_loop()
            self._spawn(old.aclose())
        store.start()

    def running(self) -> None:
        log.info("sse-resume: %s", self._settings_line())
        self.store.start()  # a remote store connects now: one that cannot be reached shows in the log at start
        self._running = True
        self.live = self._wants_live()
        self._run_keeper()
        self._flusher = asyncio.get_running_loop().create_task(self._flush_every(FLUSH_EVERY))

    def _wants_live(self) -> bool:
        """Whether open flows are refreshed: sse_live_flows, and for 'auto' whether this tool shows flows (mitmweb
        and the console hold them in a view; mitmdump has none, and writes saved flows at their end anyway)."""
        from mitmproxy import ctx

        wanted = self.settings.live_flows
        return wanted == "on" or (wanted == "auto" and ctx.master.addons.get("view") is not None)

    async def _flush_every(self, seconds: float) -> None:
        """Relays record in batches; this records what a slow stream holds back, so it is soon in history. About
        once a second (LIVE_EVERY), open flows whose transcripts grew are shown anew (with sse_live_flows)."""
        loop = asyncio.get_running_loop()
        shown = loop.time()
        while True:
            await asyncio.sleep(seconds)
            self.resumer.flush()  # (every resumer shares one set of relays to flush; a flush never raises)
            if loop.time() - shown >= LIVE_EVERY:
                shown = loop.time()
                if self.live:
                    try:
                        self._refresh_live()
                    except Exception as e:  # not expected: the flows are shown at their end as ever
                        log.error("sse-resume: internal error refreshing open flows\n%s", safe_traceback(e))

    def _transcript_of(self, state: FlowState) -> tuple[Transcript | None, KeepReport | None]:
        """The transcript of an open flow (and the keeper's report of a kept one)."""
        if state.keep is not None:
            report = self.keeper.live_report(state.keep) if self.keeper is not None else None
            return (report.transcript if report is not None else None), report
        if state.relay is not None:
            return state.relay.transcript, None
        return state.copy, None

    def _refresh_live(self) -> None:
        """Put each open SSE flow's transcript on it, when it changed since last time, and tell the tool's view.

        Cost: one join of the transcript (at most sse_transcript_bytes) per flow that changed, once a second."""
        changed: list[http.HTTPFlow] = []
        for state in self._flows.values():
            flow = state.flow
            if flow is None or state.answered or flow.response is None or not is_sse(flow.response):
                continue
            transcript, report = self._transcript_of(state)
            said = False
            if report is not None and report.outcome not in ("kept", state.kept_outcome):
                state.kept_outcome = report.outcome
                self._annotate_kept(flow, state, report)  # (it puts the transcript on the flow too)
                said = True
            if transcript is not None and transcript.version != state.shown:
                state.shown = transcript.version
                flow.response.raw_content = transcript.value()
                said = True
            if said:
                changed.append(flow)
        if changed:
            self._show(changed)

    @staticmethod
    def _show(flows: list[http.HTTPFlow]) -> None:
        """Tell mitmweb's or the console's view that these flows changed."""
        from mitmproxy import ctx

        ctx.master.addons.trigger(hooks.UpdateHook(flows))

    def _serve_metrics(self) -> None:
        wanted = (self.settings.metrics_host, self.settings.metrics_port) if self.settings.metrics_port else None
        if wanted == self._metrics_at:
            return
        self._stop_metrics()
        if wanted is not None:
            prometheus = feature("metrics_port")
            registry = prometheus.CollectorRegistry(auto_describe=False)
            registry.register(MetricsCollector(self))
            try:
                self._metrics = prometheus.start_http_server(wanted[1], addr=wanted[0], registry=registry)
            except OSError as e:
                raise exceptions.OptionsError(  # type: ignore[no-untyped-call]
                    f"sse_metrics_port: cannot listen on {wanted[0]}:{wanted[1]}: {e.strerror or e}"
                ) from None
            log.info("sse-resume: Prometheus metrics on http://%s:%d/metrics", *wanted)
        self._metrics_at = wanted

    def _stop_metrics(self) -> None:
        if self._metrics is not None:
            server, thread = self._metrics
            server.shutdown()
            server.server_close()
            thread.join(5)
            self._metrics = None
        self._metrics_at = None

    async def done(self) -> None:
        self._stop_metrics()
        self._running = False
        if self._flusher is not None:
            self._flusher.cancel()
        self.resumer.flush()
        if self.keeper is not None:
            await self.keeper.aclose()
            self.keeper = None
        await self.store.aclose()  # a remote store writes what is still queued, for a second at most

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
            transcript_bytes=s.transcript_bytes,
            transcript_budget=self.transcript_budget,
            stats=self.resume_stats,
            unflushed=self._unflushed,
            budget=self._budget,
        )

    # -- hooks -----------------------------------------------------------------------------------------------

    def _session_of(self, request: http.Request) -> str:
        """The request's identity: the one key of its history, its replays and the kept streams it may attach to."""
        return request_identity(
            request.scheme,
            request.host,
            request.port,
            request.path,
            request.headers.fields,
            self._identity,
            self._secret,
        )

    async def request(self, flow: http.HTTPFlow) -> None:
        try:
            await self._request(flow)
        except Exception as e:
            log.error(
                "sse-resume: internal error on request %s; passing it through untouched\n%s", flow.id, safe_traceback(e)
            )
            self._flows.pop(flow.id, None)

    async def _request(self, flow: http.HTTPFlow) -> None:
        request = flow.request
        if request.http_version.startswith("HTTP/1") and flow.client_conn.id in self._charges:
            # mitmproxy reads a connection's next request only once it has written the previous response and
            # its writers have drained: the replays it held for this connection are sent.
            self._release(flow.client_conn.id)
        learned = self.keeper is not None and request.method == "GET" and _endpoint(request) in self._sse_endpoints
        if flow.response is not None or not (wants_sse(request) or learned):
            return
        if treatment(request.headers.get("mcp-protocol-version")) == "pass":
            return  # an MCP version without resumable streams: nothing to do, nothing touched
        state = self._flows[flow.id] = FlowState(self._session_of(request), flow)
        state.last_event_id = request.headers.get("last-event-id")
        if self.keeper is not None and self._keep(flow, state):
            return
        if not wants_sse(request):
            del self._flows[flow.id]  # a learned endpoint the keeper could not take: served as any other
            return
        if "accept-encoding" in request.headers:
            request.headers["accept-encoding"] = "identity"  # frames must arrive as text to be read
        last_event_id = request.headers.get("last-event-id")
        if request.method != "GET" or last_event_id is None:
            return
        mode = self.settings.replay_mode
        inline = mode == "inline" or (mode == "auto" and SSE_TYPE not in request.headers.get("accept", "").lower())
        decision = await self.resumer.decide(state.session, last_event_id, inline)
        state.decision = decision
        if decision.charge is not None:
            self._hold(flow.client_conn.id, decision.charge)
        log.info(
            "sse-resume: session %s: %s (%s), id %s",
            state.session[:12],
            decision.outcome,
            decision.note,
            id_digest(state.session, last_event_id),
        )
        if decision.body:
            flow.response = http.Response.make(
                200,
                decision.body,
                {"content-type": SSE_TYPE, "cache-control": "no-cache", RESULT_HEADER: "hit"},
            )
            state.answered = True
            self._annotate(flow, state)
        else:
            if decision.forward_id is None:
                del request.headers["last-event-id"]
            elif decision.forward_id != last_event_id:
                request.headers["last-event-id"] = decision.forward_id
            self._annotate(flow, state)  # said at once: the flow shows it while the stream is open
            if self.live:
                self._show([flow])

    def _keep(self, flow: http.HTTPFlow, state: FlowState) -> bool:
        """Route an SSE request to the keeper (GET streams and POSTs that accept one); False: serve it as usual."""
        request = flow.request
        keeper = self.keeper
        assert keeper is not None
        if request.method == "POST":
            if SSE_TYPE not in request.headers.get("accept", "").lower():
                return False
        elif request.method != "GET":
            return False
        headers = tuple(
            (name, value) for name, value in request.headers.items(multi=True) if name.lower() not in HOP_BY_HOP
        )
        upstream = UpstreamRequest(request.method, request.url, headers, request.raw_content or b"")
        token = keeper.admit(state.session, upstream, state.last_event_id)
        if token is None:
            return False
        state.keep = token
        state.origin = (request.scheme, request.host, request.port, request.host_header)
        request.scheme, request.host, request.port = "http", "127.0.0.1", keeper.port
        request.headers[TICKET_HEADER] = token
        return True

    def _learn(self, request: http.Request) -> None:
        endpoint = _endpoint(request)
        self._sse_endpoints[endpoint] = None
        self._sse_endpoints.move_to_end(endpoint)
        if len(self._sse_endpoints) > MAX_ENDPOINTS:
            self._sse_endpoints.popitem(last=False)

    def _restore(self, flow: http.HTTPFlow, state: FlowState) -> None:
        """Show the real upstream on a flow the keeper served (its connection went to the keeper)."""
        if state.origin is None:
            return
        request = flow.request
        request.scheme, request.host, request.port, host_header = state.origin
        request.host_header = host_header
        request.headers.pop(TICKET_HEADER, None)
        state.origin = None

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        try:
            self._responseheaders(flow)
        except Exception as e:
            log.error(
                "sse-resume: internal error on response %s; passing it through untouched\n%s",
                flow.id,
                safe_traceback(e),
            )
            self._flows.pop(flow.id, None)
            if flow.response is not None and is_sse(flow.response):
                flow.response.stream = True

    def _responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        kept = self._flows.get(flow.id)
        if kept is not None and kept.keep is not None:
            self._restore(flow, kept)
            if is_sse(response):
                assert response is not None
                response.stream = True
            return
        if self.keeper is not None and flow.request.method == "GET" and is_sse(response):
            self._learn(flow.request)
        if not is_sse(response):
            self._flows.pop(flow.id, None)
            return
        assert response is not None
        if treatment(flow.request.headers.get("mcp-protocol-version")) == "pass":
            version = flow.request.headers.get("mcp-protocol-version", "")
            passed = self._flows[flow.id] = FlowState("", flow)
            response.stream = self._copying(passed, f"MCP {_shown_version(version)}: nothing to resume")
            return
        state = self._flows.get(flow.id)
        if state is not None and state.answered:
            return
        if state is None:
            state = self._flows[flow.id] = FlowState(self._session_of(flow.request), flow)
        if response.status_code != 200:
            # (an error is not a stream: it goes out as it came, headers and body)
            response.stream = self._copying(state, f"status {response.status_code}: not a stream")
            return
        try:
            decoder = decoder_for(response.headers.get("content-encoding"))
        except UnsupportedEncoding:
            log.warning(
                "sse-resume: %s: cannot decode Content-Encoding %s; passing the stream through",
                flow.id,
                _shown_encoding(response.headers.get("content-encoding", "").strip().lower()),
            )
            response.stream = True
            del self._flows[flow.id]
            return
        decision = state.decision or Decision("fresh", state.session)
        if decision.outcome != "fresh":
            response.headers[RESULT_HEADER] = decision.outcome + ("; inline" if decision.outcome == "hit" else "")
        ends = False
        if decoder is not None:
            del response.headers["content-encoding"]
            if flow.request.http_version == "HTTP/1.1":
                # Chunked (below), so that the addon can end the response early (a body that decodes past its
                # bound, or not at all); and the connection closes after it, as the upstream's end still follows.
                response.headers["connection"] = "close"
                ends = True
        if decoder is not None or "content-length" in response.headers:
            # The body the client gets is not the upstream's length: decoded, or with the addon's bytes in front
            # (a comment, a replay, a restored retry) and duplicates dropped. (mitmproxy still reads the upstream
            # by the length it came with.) HTTP/1.1 gets chunked framing; HTTP/2 frames by itself; an HTTP/1.0
            # client reads to the connection's end.
            response.headers.pop("content-length", None)
            if flow.request.http_version == "HTTP/1.1":
                response.headers["transfer-encoding"] = "chunked"
            elif flow.request.http_version.startswith("HTTP/1"):
                response.headers["connection"] = "close"
        state.relay = self.resumer.open(decision, release_early=flow.request.http_version.startswith("HTTP/1"))
        response.stream = self._callable(flow.id, state, decoder, ends)

    def _copying(self, state: FlowState, why: str) -> Callable[[bytes], Iterable[bytes] | bytes] | bool:
        """The stream callable of a response passed through untouched: it only keeps a transcript (bounded)."""
        state.passed = why
        if not self.settings.transcript_bytes:
            return True
        transcript = state.copy = Transcript(self.settings.transcript_bytes, self.transcript_budget)

        def copy(chunk: bytes) -> Iterable[bytes] | bytes:
            if not chunk:
                return []  # (an empty bytes object would end an HTTP/1 response early: this is the end anyway)
            with contextlib.suppress(Exception):  # (not expected: the bytes pass on whatever happens)
                transcript.add(chunk)
            return chunk

        return copy

    def _callable(
        self, flow_id: str, state: FlowState, decoder: Decoder | None, ends: bool = False
    ) -> Callable[[bytes], Iterable[bytes] | bytes]:
        relay = state.relay
        assert relay is not None
        relay.on_failure = functools.partial(_log_failure, flow_id, state)
        if decoder is None:
            return relay.pipe  # one call per chunk, nothing in between: the relay's hot path
        end: list[bytes] = [b""] if ends else []  # an empty chunk ends a chunked HTTP/1 response

        def decoded(chunk: bytes) -> Iterable[bytes] | bytes:
            if state.stopped:
                return []  # the response has ended: the rest of the body is dropped, undecoded
            try:
                data = decoder.decode(chunk) if chunk else decoder.finish()
                out = relay.feed(data) if data else b""
                if decoder.error:
                    return self._stop_decoding(flow_id, state, decoder, out, end, chunk)
                if not chunk:
                    out += relay.close()
                return out if out else []  # an empty bytes object would end an HTTP/1 response
            except Exception as e:  # not expected (the decoder and the relay do not raise): end the response
                log.error(
                    "sse-resume: internal error decoding %s; the response ends here\n%s", flow_id, safe_traceback(e)
                )
                state.stopped = "internal error"
                state.failed = True
                return end

        return decoded

    @staticmethod
    def _stop_decoding(
        flow_id: str, state: FlowState, decoder: Decoder, out: bytes, end: list[bytes], chunk: bytes
    ) -> list[bytes]:
        """The body does not decode, or decodes past its bound: what decoded before is sent, then the end.

        (A body that ended inside compressed data has ended anyway: that is only said.)"""
        relay = state.relay
        assert relay is not None
        if not chunk:  # the clean end of a truncated body: all it held was decoded and relayed
            log.info("sse-resume: %s: the %s body %s", flow_id, decoder.encoding, decoder.error)
            out += relay.close()
            return [out] if out else []
        log.warning(
            "sse-resume: %s: the %s body %s; the response ends here (%d bytes decoded)",
            flow_id,
            decoder.encoding,
            decoder.error,
            decoder.produced,
        )
        state.stopped = f"the {decoder.encoding} body {decoder.error}"
        relay.flush()  # the events relayed are history; an event cut short is not sent
        return [out, *end] if out else end

    def _hold(self, connection: str, charge: Charge) -> None:
        """Count a replay against the budget until mitmproxy no longer holds its bytes for ``connection``.

        A response made in the ``request`` hook is written after the ``response`` hook, and a client that does not
        read keeps it in mitmproxy's write buffer: the replay stays counted until the connection's next request
        (HTTP/1) or its end (``client_disconnected``). An inline replay is also released by its relay once sent
        (see ``Relay._feed``), or at the end of its flow."""
        held = self._charges.setdefault(connection, [])
        held[:] = [c for c in held if c.held]
        held.append(charge)

    def _release(self, connection: str) -> None:
        for charge in self._charges.pop(connection, ()):
            charge.release()

    def client_disconnected(self, client: Any) -> None:
        try:
            self._release(client.id)
        except Exception as e:
            log.error("sse-resume: internal error releasing replays\n%s", safe_traceback(e))

    def response(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)
        try:
            self._lifecycle(flow)
        except Exception as e:
            log.error("sse-resume: internal error on the session lifecycle of %s\n%s", flow.id, safe_traceback(e))

    def _lifecycle(self, flow: http.HTTPFlow) -> None:
        """An ended session (a successful DELETE, or a 404 for its id) takes its history with it at once."""
        response = flow.response
        request = flow.request
        if response is None or self.settings.session_header not in request.headers:
            return
        ended = (request.method == "DELETE" and 200 <= response.status_code < 300) or response.status_code == 404
        if ended and self.keeper is not None:
            self.keeper.drop_session(self._session_of(request))
        if ended and self.store.drop_session(self._session_of(request)):
            log.info(
                "sse-resume: session %s ended (%s %d): history dropped",
                self._session_of(request)[:12],
                request.method,
                response.status_code,
            )

    def error(self, flow: http.HTTPFlow) -> None:
        self._finish(flow)  # a client disconnect is how most SSE streams end

    def _finish(self, flow: http.HTTPFlow) -> None:
        try:
            state = self._flows.pop(flow.id, None)
            if state is None:
                return
            charge = state.decision.charge if state.decision is not None else None
            if charge is not None and not state.answered:
                charge.release()  # an inline replay: the stream has ended (an answered one: see _hold)
            if state.answered:
                return
            if state.keep is not None:
                self._restore(flow, state)
                report = self.keeper.report(state.keep) if self.keeper is not None else None
                if report is not None:
                    self._annotate_kept(flow, state, report)
                    if report.transcript is not None:
                        report.transcript.close()
                return
            if state.copy is not None:
                response = flow.response
                encoded = response is not None and response.headers.get("content-encoding", "identity") != "identity"
                if response is not None and not (encoded and state.copy.dropped):
                    response.raw_content = state.copy.value()  # (compressed, it is shown only when whole)
                state.copy.close()
            if state.passed and state.decision is None:
                flow.metadata["sse_resume"] = {"outcome": "passed", "passthrough": state.passed}
                return
            relay = state.relay
            if relay is not None:
                relay.flush()  # what it relayed before the client went is history too (a failure is logged)
            if relay is not None and relay.transcript is not None:
                if flow.response is not None:
                    flow.response.raw_content = relay.transcript.value()
                relay.transcript.close()
            if relay is not None or state.decision is not None:
                self._annotate(flow, state)
        except Exception as e:
            log.error("sse-resume: internal error annotating %s\n%s", flow.id, safe_traceback(e))

    def _annotate(self, flow: http.HTTPFlow, state: FlowState) -> None:
        """Say on the flow, in words and as data, what the addon did with it."""
        decision = state.decision
        relay = state.relay
        outcome = decision.outcome if decision is not None else "fresh"
        shown = _show_id(state.last_event_id)
        words: list[str] = [describe(decision, shown)] if decision is not None and outcome != "fresh" else []
        facts: dict[str, Any] = {"outcome": outcome, "session": state.session[:12]}
        if state.last_event_id is not None:
            facts["client_last_event_id"] = shown
            if not state.answered:  # (a hit answered by the proxy sent nothing upstream)
                sent = _show_id(flow.request.headers.get("last-event-id"))
                facts["upstream_last_event_id"] = sent
                if sent != shown and outcome != "miss":  # (a miss says what went upstream)
                    words.append(f"client's Last-Event-ID {shown}, sent upstream as {sent}")
        if decision is not None:
            facts["note"] = decision.note
            facts["replayed"] = len(decision.replay)
            if decision.held_back:
                facts["held_back"] = decision.held_back
        if relay is not None:
            facts.update(
                stream=relay.stream,
                recorded=relay.stats.recorded,
                duplicates=relay.stats.duplicates,
                oversize=relay.stats.oversize,
            )
            if relay.stats.duplicates:
                n = relay.stats.duplicates
                words.append(f"{n} duplicate event{'s' if n != 1 else ''} dropped")
            if relay.stats.oversize:
                words.append(f"{relay.stats.oversize} oversize piece(s) passed through unrecorded")
            if relay.transcript is not None and relay.transcript.dropped:
                facts["transcript_dropped_bytes"] = relay.transcript.dropped
        if state.stopped:
            words.append(f"response ended: {state.stopped}")
            facts["ended"] = state.stopped
        elif state.failed:
            words.append("internal error: passed through untouched from then on")
        if state.failed:
            facts["failed"] = True
        if relay is not None and relay.passthrough:
            facts["passthrough"] = relay.passthrough
        elif state.passed:
            facts["passthrough"] = state.passed
        flow.metadata["sse_resume"] = facts
        if words:
            _say(flow, state, "sse-resume: " + "; ".join(words))
            if outcome in ("hit", "miss") or (relay is not None and relay.stats.duplicates):
                flow.marked = MARK

    def _annotate_kept(self, flow: http.HTTPFlow, state: FlowState, report: KeepReport) -> None:
        if report.transcript is not None and flow.response is not None and is_sse(flow.response):
            flow.response.raw_content = report.transcript.value()
        words = [f"kept: {report.note}" if report.note else "kept: the proxy read the upstream stream itself"]
        if report.reconnects:
            words.append(f"upstream reconnected {report.reconnects} time{'s' if report.reconnects != 1 else ''}")
        if report.ended and report.ended != "client gone":
            words.append(f"response ended: {report.ended}")
        if state.last_event_id is not None:
            words.append(f"client's Last-Event-ID {_show_id(state.last_event_id)}")
        _say(flow, state, "sse-resume: " + "; ".join(words))
        flow.metadata["sse_resume"] = {
            "outcome": report.outcome,
            "session": state.session[:12],
            "kept": True,
            "stream": report.stream,
            "replayed": report.replayed,
            "delivered": report.delivered,
            "upstream_reconnects": report.reconnects,
            "upstream_status": report.upstream_status,
        }
        if report.outcome in ("hit", "miss") or report.reconnects:
            flow.marked = MARK

    # -- commands ----------------------------------------------------------------------------------------------

    @command.command("sse.sessions")
    def sessions_command(self) -> str:
        """The sessions held: key (its first 12 characters name it in other commands), streams, events, age."""
        keys = [info.key[:12] for info in self.store.sessions()]
        held = f"{len(keys)} session{'s' if len(keys) != 1 else ''} held"
        return _answer(
            "sse.sessions",
            f"{held}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}" if keys else held,
            self._session_rows(),
        )

    def _session_rows(self) -> list[str]:
        rows = [f"{'session':12}  {'streams':>7}  {'events':>7}  {'bytes':>9}  {'age s':>7}  {'idle s':>7}"]
        for info in self.store.sessions():
            rows.append(
                f"{info.key[:12]}  {info.streams:>7}  {info.events:>7}  {info.bytes:>9}  "
                f"{info.age:>7.1f}  {info.idle:>7.1f}"
            )
        return rows

    @command.command("sse.history")
    def history_command(self, session: str = "") -> str:
        """The events held for one session (a key or its first characters), oldest first. Without one: the only
        session held, or the list of sessions to choose from."""
        if not session.strip():
            keys = list(self.store)
            if len(keys) != 1:
                summary = "no session held" if not keys else f"{len(keys)} sessions held: name one, sse.history KEY"
                return _answer("sse.history", summary, [summary, *(self._session_rows() if keys else [])])
            session = keys[0]
        key = self._find_session(session)
        now = self.store.clock()
        events = list(self.store.events(key))
        rows = [f"session {key[:12]}: {'seq':>8}  {'stream':>6}  {'age s':>7}  {'bytes':>6}  id"]
        for e in events:
            size = len(e.raw) if e.raw is not None else 0
            rows.append(f"{'':21}{e.seq:>8}  {e.stream:>6}  {now - e.time:>7.1f}  {size:>6}  {_show_id(e.id)}")
        summary = f"session {key[:12]}: {len(events)} event{'s' if len(events) != 1 else ''} held"
        if events:
            summary += f", ids {_show_id(events[0].id)} to {_show_id(events[-1].id)}"
        return _answer("sse.history", summary, rows)

    @command.command("sse.stats")
    def stats_command(self) -> str:
        """Counters: sessions, events and bytes held, replays, misses, deduplications, evictions by reason."""
        stats = self.stats()
        summary = ", ".join(f"{name} {stats[name]}" for name in ("sessions", "events", "hits", "misses"))
        return _answer("sse.stats", summary, [f"{name}: {value}" for name, value in stats.items()])

    @command.command("sse.clear")
    def clear_command(self, *sessions: str) -> str:
        """Forget the given sessions (keys or their first characters), or every session when none is given."""
        if not sessions:
            n = self.store.clear()
            return f"cleared {n} session{'s' if n != 1 else ''}"
        keys = [self._find_session(s) for s in sessions]
        for key in keys:
            self.store.drop_session(key)
        return f"cleared {len(keys)} session{'s' if len(keys) != 1 else ''}"

    @command.command("sse.settings")
    def settings_command(self) -> str:
        """The settings in effect (after defaults, config.yaml, the sse_config file and options), and the source of
        each. Secrets are not shown, only whether they are set."""
        from mitmproxy import ctx

        rows = [f"{'option':24}  {'value':24}  source"]
        changed = 0
        for name, text in shown(self.settings).items():
            source = self.sources.get(name, DEFAULT)
            changed += source != DEFAULT
            rows.append(f"{'sse_' + name:24}  {text:24}  {source}")
        rows.append(f"{'sse_config':24}  {ctx.options.sse_config or '(unset)':24}  option")
        summary = f"{len(rows) - 1} settings, {changed} not at their defaults"
        return _answer("sse.settings", summary, rows)

    def _settings_line(self) -> str:
        """The settings given a value (by a file, config.yaml's sse: block or an option), with their sources."""
        from mitmproxy import ctx

        changed = [
            f"sse_{name}={text} ({self.sources.get(name, DEFAULT)})"
            for name, text in shown(self.settings).items()
            if self.sources.get(name, DEFAULT) != DEFAULT
        ]
        if ctx.options.sse_config:
            changed.insert(0, f"sse_config={ctx.options.sse_config} (option)")
        if not changed:
            return "settings: all at their defaults (the command sse.settings lists them)"
        return f"settings: {', '.join(changed)}; every other at its default (the command sse.settings lists all)"

    def _find_session(self, prefix: str) -> str:
        matches = [key for key in self.store if key.startswith(prefix.strip())] if prefix.strip() else []
        if len(matches) != 1:
            raise exceptions.CommandError(  # type: ignore[no-untyped-call]
                f"{'no' if not matches else 'more than one'} session matches {prefix!r}: see sse.sessions"
            )
        return matches[0]

    # -- for tests and commands ------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        snap = self.store.snapshot()
        r = self.resume_stats
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
            "deduplicated": r.deduplicated,
            "replays_in_flight": self._budget.replays,
            "replay_bytes_in_flight": self._budget.held,
            "replays_shortened": self._budget.shortened,
            **self._store_stats(),
            **self._keep_stats(),
        }

    def _keep_stats(self) -> dict[str, Any]:
        if self.keeper is None:
            return {}
        k = self.keeper.stats
        return {
            "kept_streams": len(self.keeper.streams),
            "kept_streams_started": k.kept,
            "upstream_reconnects": k.reconnects,
            "upstream_given_up": k.gave_up,
            "keep_grace_expired": k.grace_expired,
            "keep_buffer_full": k.buffer_full,
        }

    def _store_stats(self) -> dict[str, Any]:
        h = self.store.health()
        if h is None:
            return {"store": "memory"}
        return {
            "store": shown(self.settings)["store"],
            "store_up": h.up,
            "store_queued": h.queued,
            "store_writes": h.writes,
            "store_failures": h.failures,
            "store_dropped_writes": h.dropped,
            "store_fallbacks": h.fallbacks,
        }


def _log_failure(flow_id: str, state: FlowState, relay: Relay) -> None:
    """Say once per flow that the relay failed (it passes everything through from then on)."""
    state.failed = True
    log.error(
        "sse-resume: internal error relaying %s (session %s); passing the rest through%s",
        flow_id,
        state.session[:12],
        "\n" + safe_traceback(relay.failed) if relay.failed is not None else "",
    )


def _in_web() -> bool:
    """Whether this is mitmweb, whose command bar shows a result on one line, as JSON."""
    from mitmproxy import ctx

    return type(ctx.master).__module__.startswith("mitmproxy.tools.web")


def _answer(name: str, summary: str, rows: list[str]) -> str:
    """A command's answer, as the tool running it shows it well.

    mitmproxy's console shows a result's lines as they are: the table comes back. mitmweb's command bar shows it
    on one line, as a JSON string: there the answer is the one-line ``summary``, and the table goes to the event
    log, which shows each line (its first line names the command)."""
    if not _in_web():
        return "\n".join(rows)
    log.info("%s\n%s", name, "\n".join(rows))
    return f"{summary} (the table is in the event log)"


def _say(flow: http.HTTPFlow, state: FlowState, sentence: str) -> None:
    """Put the addon's sentence in the flow's comment, in place of the one it put there before."""
    comment = flow.comment
    if state.note and comment.endswith(state.note):
        comment = comment[: -len(state.note)].rstrip("\n")
    flow.comment = f"{comment}\n{sentence}" if comment else sentence
    state.note = sentence


def _shown_version(version: str) -> str:
    """An MCP-Protocol-Version for the flow's metadata: a date as it is, anything else as its size and digest."""
    text = version.strip()
    if len(text) == 10 and text[4] == text[7] == "-" and text.replace("-", "").isdigit():
        return text
    return f"({withheld(version)})"


def _endpoint(request: http.Request) -> tuple[str, str, int, str]:
    return (request.scheme, request.host, request.port, request.path.partition("?")[0])


ENCODINGS = frozenset({"gzip", "x-gzip", "deflate", "br", "zstd", "compress", "identity"})


def _shown_encoding(value: str) -> str:
    """A Content-Encoding for a log line: a registered name as it is, anything else as a size and digest."""
    return repr(value) if value in ENCODINGS else f"({withheld(value)})"


def _show_id(event_id: str | None, limit: int = 40) -> str:
    """An event id as a user may read it in the flow view: quoted, escaped, shortened."""
    if event_id is None:
        return "(none)"
    text = repr(event_id)
    return text if len(text) <= limit else text[: limit - 3] + "...'"


_resume = SSEResume()
addons = [_resume, SSEFaults(flow_state=_resume._flows.get)]  # (faults' hooks run after the resume's)

__all__ = ["HistoryLimits", "SSEResume", "addons"]

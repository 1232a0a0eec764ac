"""Keep mode's side in mitmproxy: the keeper's life to match the settings, and the SSE requests routed to it."""

from __future__ import annotations

import logging
import ssl
from collections import OrderedDict

from mitmproxy import http

from sse_resume_core._keep import Backoff
from sse_resume_keep import TICKET_HEADER, Keeper, KeepSettings, UpstreamRequest, insecure_context
from sse_resume_shell._flow import SSE_TYPE, FlowState
from sse_resume_shell._shell import Shell

__all__ = ["SSEKeep"]

log = logging.getLogger("sse_resume")

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "content-length"})
MAX_ENDPOINTS = 1000
TLS_OPTIONS = {"ssl_insecure", "ssl_verify_upstream_trusted_ca", "ssl_verify_upstream_trusted_confdir"}


def endpoint(request: http.Request) -> tuple[str, str, int, str]:
    return (request.scheme, request.host, request.port, request.path.partition("?")[0])


class SSEKeep:
    """Runs the keeper while ``sse_keep_upstream`` is on (it closes with the store, see SSELifecycle), and routes
    SSE requests to it for the resume hooks, which call :meth:`route`, :meth:`learn` and :meth:`restore`."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        # URLs seen answering text/event-stream: keep mode also keeps GETs to them that do not say they want SSE
        self._sse_endpoints: OrderedDict[tuple[str, str, int, str], None] = OrderedDict()

    def configure(self, updated: set[str]) -> None:
        keeper = self.shell.keeper
        if keeper is not None and updated & TLS_OPTIONS:
            keeper.reconfigure(self._keep_settings())
        if self.shell.running and any(name.startswith("sse_") for name in updated):
            self._run_keeper()

    def running(self) -> None:
        self._run_keeper()

    def _keep_settings(self) -> KeepSettings:
        from mitmproxy import ctx

        s = self.shell.settings
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
            transcript_budget=self.shell.transcript_budget,
            tls=tls,
        )

    def _run_keeper(self) -> None:
        """Start, reconfigure or stop the keeper to match the settings."""
        shell = self.shell
        keeper = shell.keeper
        if keeper is not None and (not shell.settings.keep_upstream or keeper.store is not shell.store):
            shell.keeper = None
            shell.spawn(keeper.aclose())
            keeper = None
        if not shell.settings.keep_upstream:
            return
        if keeper is None:
            shell.keeper = Keeper(shell.resumer, self._keep_settings())
            try:
                shell.keeper.start()
            except OSError as e:
                log.error("sse-resume: keep mode is off: the keeper cannot listen on 127.0.0.1 (%s)", e)
                shell.keeper = None
        else:
            keeper.reconfigure(self._keep_settings())

    def learned(self, request: http.Request) -> bool:
        """A GET to a URL seen answering text/event-stream (while keep mode is on)."""
        return self.shell.keeper is not None and request.method == "GET" and endpoint(request) in self._sse_endpoints

    def route(self, flow: http.HTTPFlow, state: FlowState) -> bool:
        """Route an SSE request to the keeper (GET streams and POSTs that accept one); False: serve it as usual."""
        request = flow.request
        keeper = self.shell.keeper
        assert keeper is not None
        if request.method == "POST":
            if SSE_TYPE not in request.headers.get("accept", "").lower():
                return False
        elif request.method != "GET":
            return False
        headers = tuple(
            (name, value)
            for name, value in request.headers.items(multi=True)  # type: ignore[no-untyped-call]
            if name.lower() not in HOP_BY_HOP
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

    def learn(self, request: http.Request) -> None:
        """Remember a URL that answered a GET with text/event-stream (at most MAX_ENDPOINTS, the newest)."""
        if self.shell.keeper is None or request.method != "GET":
            return
        where = endpoint(request)
        self._sse_endpoints[where] = None
        self._sse_endpoints.move_to_end(where)
        if len(self._sse_endpoints) > MAX_ENDPOINTS:
            self._sse_endpoints.popitem(last=False)

    @staticmethod
    def restore(flow: http.HTTPFlow, state: FlowState) -> None:
        """Show the real upstream on a flow the keeper served (its connection went to the keeper)."""
        if state.origin is None:
            return
        request = flow.request
        request.scheme, request.host, request.port, host_header = state.origin
        request.host_header = host_header
        request.headers.pop(TICKET_HEADER, None)
        state.origin = None

"""The keeper: a small HTTP/1.1 server on 127.0.0.1 that owns the upstream leg of kept SSE streams.

The addon reroutes an SSE request to it with a one-time ticket naming the real upstream request. The keeper
fetches the upstream itself, so it can answer a reconnecting client at once from history, read on while
the client is away, and reconnect upstream while the client's response stays open. Sans-mitmproxy: it knows
HTTP and asyncio; every decision about events is the core's (:class:`~sse_resume_core._keep.KeptFeed`).

One :class:`KeptStream` per history stream: it reads the upstream, records each event once, and fans events out
to the clients attached to it, each of which is one response on one connection from mitmproxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import socket
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final

import h11

from sse_resume_core._decode import Decoder, UnsupportedEncoding, decoder_for
from sse_resume_core._history import StoredEvent
from sse_resume_core._keep import Backoff, Delivery, KeptFeed
from sse_resume_core._logsafe import safe_traceback
from sse_resume_core._resume import Charge, Decision, Resumer, digest, fitting, is_proxy_id
from sse_resume_core._store import HistoryStore
from sse_resume_core._view import Transcript, TranscriptBudget
from sse_resume_keep._upstream import Upstream, UpstreamError, open_upstream

__all__ = ["TICKET_HEADER", "ClientQueues", "KeepReport", "KeepSettings", "Keeper", "KeeperStats", "UpstreamRequest"]

log = logging.getLogger("sse_resume")

TICKET_HEADER: Final = "x-sse-resume-keep"
TICKET_TTL: Final = 60.0  # seconds a ticket waits for mitmproxy's connection
MAX_HEAD: Final = 256 * 1024  # the largest request head the keeper reads from mitmproxy (bodies are not kept)
MAX_REPORTS: Final = 100_000  # reports of flows in progress, a bound in case mitmproxy never ends one
FAIR_SHARE: Final = 32 * 1024
"""Bytes a kept stream feeds (a larger chunk, read or decoded, is fed in pieces of this size) before it lets the
event loop run the others. A read of bytes already buffered does not yield, so an upstream that sends faster than
the proxy parses held every other stream of the proxy while a chunk of it was parsed: with 4 MiB of tiny blocks
(tests/e2e/test_encoding_e2e.py), 27-79 events of another stream (one each 10 ms) reached its client in one
read; 16-37 with pieces of 32 KiB. Pieces of 8 KiB made that 11-19, but relayed a fast upstream's large chunks
10% slower (bench_keep.py, paired rounds: more, smaller writes for mitmproxy to carry); 32 KiB costs nothing
measurable there (0.98-1.08x)."""
SLOW_CLIENT: Final = 256 * 1024  # the least that may be queued for a client (see ClientQueues.share)
TOO_SLOW: Final = b": sse-resume: client too slow: this response ends here; reconnect with Last-Event-ID to resume\n\n"
SKIPPED: Final = (
    b": sse-resume: an event too large to keep (over sse_max_event_bytes) was under way when this response "
    b"began: the rest of it was skipped\n\n"
)
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
        TICKET_HEADER,
    }
)
HOP_BY_HOP_BYTES: Final = frozenset(name.encode() for name in HOP_BY_HOP)  # upstream headers are kept as bytes
DROP_FROM_STREAM: Final = HOP_BY_HOP_BYTES | {b"content-encoding"}  # the keeper sends streams decoded
SSE_TYPE: Final = "text/event-stream"


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """The request as the proxy would have sent it upstream."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""

    def with_last_event_id(self, last_event_id: str | None) -> UpstreamRequest:
        headers = tuple((k, v) for k, v in self.headers if k.lower() != "last-event-id")
        if last_event_id:
            headers += (("Last-Event-ID", last_event_id),)
        return UpstreamRequest(self.method, self.url, headers, self.body)

    def resumed(self, last_event_id: str | None) -> UpstreamRequest:
        """The request that resumes this stream: a GET (MCP resumes POST streams with a GET) with the id."""
        if self.method == "GET":
            return self.with_last_event_id(last_event_id)
        drop = {"content-type", "content-encoding"}
        headers = tuple((k, v) for k, v in self.headers if k.lower() not in drop)
        return UpstreamRequest("GET", self.url, headers).with_last_event_id(last_event_id)


@dataclass(slots=True)
class KeepReport:
    """What the keeper did for one flow, for the flow view."""

    outcome: str = "kept"
    note: str = ""
    decided: str | None = None
    """The history stream the decision named (a resume's)."""
    feed: KeptFeed | None = None
    """The feed of the kept stream serving the flow."""
    upstream_status: int | None = None
    replayed: int = 0
    reconnects: int = 0
    delivered: int = 0
    ended: str = ""
    transcript: Transcript | None = None

    @property
    def stream(self) -> str | None:
        """The flow's history stream: its kept stream's (known once its first events are), or the decision's."""
        stream = None if self.feed is None else self.feed.stream
        return stream or self.decided


@dataclass(frozen=True, slots=True)
class KeepSettings:
    grace: float = 30.0
    max_events: int = 1000
    max_bytes: int = 16 * 1024 * 1024
    max_streams: int = 1000
    assign_ids: bool = False
    backoff: Backoff = field(default_factory=Backoff)
    max_event_bytes: int = 1024 * 1024
    transcript_bytes: int = 0
    transcript_budget: TranscriptBudget | None = None
    """The bound on all transcripts together, shared with the addon's relays."""
    tls: ssl.SSLContext | None = None
    """How upstream certificates are checked (None: the system's default)."""
    max_queued_bytes: int = 256 * 1024 * 1024
    """Bytes queued for all clients together (see :class:`ClientQueues`)."""

    @property
    def client_buffer(self) -> int:
        """Bytes queued for one client, at most: eight of the largest events kept (8 MiB by default), or less,
        its share of :attr:`max_queued_bytes` (see :class:`ClientQueues`).

        Past it, at an event boundary, the client's response ends with a comment saying so (it resumes from
        history); inside an event too large to keep, the stream waits for the client instead (see
        :meth:`KeptStream._hold_back`)."""
        return max(SLOW_CLIENT, 8 * self.max_event_bytes)


@dataclass(slots=True)
class _Ticket:
    session: str
    request: UpstreamRequest
    last_event_id: str | None
    created: float
    report: KeepReport


@dataclass(slots=True)
class KeeperStats:
    kept: int = 0
    """Streams kept so far."""
    reconnects: int = 0
    """Upstream reconnections that succeeded."""
    gave_up: int = 0
    grace_expired: int = 0
    buffer_full: int = 0


class ClientQueues:
    """What is queued for keep mode's clients, bounded for all of them together.

    Each client may have its share queued: ``max_queued_bytes`` divided by the number of clients counted, at most
    :attr:`KeepSettings.client_buffer`, never less than :data:`SLOW_CLIENT`. A client counts from its start
    until its connection is done with it: what was queued for it after its response ended (a client too slow)
    counts until it is taken or dropped. When a client comes, those past the new share are dealt with at once: a
    response going on ends as for a client too slow (it is between events: the keeper writes events whole, and
    one inside an event too large to keep is waited for instead, see :meth:`KeptStream._hold_back`); what is
    queued after a response that already ended is dropped with its connection (the client reconnects and resumes,
    as after any break). So the bytes queued stay within ``max_queued_bytes`` (or ``SLOW_CLIENT`` a client, for
    more than ``max_queued_bytes / SLOW_CLIENT`` clients), plus what one write adds past a share.
    """

    __slots__ = ("clients", "settings")

    def __init__(self, settings: KeepSettings) -> None:
        self.settings = settings
        self.clients: set[_Client] = set()

    def share(self) -> int:
        """Bytes one client may have queued now. Runtime complexity: O(1)."""
        s = self.settings
        return max(SLOW_CLIENT, min(s.client_buffer, s.max_queued_bytes // max(len(self.clients), 1)))

    def add(self, client: _Client) -> None:
        """Count ``client``; deal with those now past their share. Runtime complexity: O(clients)."""
        self.clients.add(client)
        share = self.share()
        for other in [c for c in self.clients if c.queued() > share and not (c.big or c.draining)]:
            if not other.closed:
                other.finish("client too slow: response ended (it resumes from history)", clean=True, say=TOO_SLOW)
            elif not other.writer.transport.is_closing():
                other.writer.transport.abort()  # (its response ended: what is queued after it is dropped)

    def discard(self, client: _Client) -> None:
        self.clients.discard(client)


class _Client:
    """One client response (a connection from mitmproxy) fed by a kept stream."""

    __slots__ = ("big", "closed", "conn", "done", "draining", "floor", "queues", "report", "skipping", "writer")

    def __init__(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, report: KeepReport, queues: ClientQueues
    ) -> None:
        self.conn = conn
        self.writer = writer
        self.report = report
        self.queues = queues
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.closed = False
        self.big = False  # in the middle of an oversize event: more of it must follow before anything else
        self.draining = False  # an oversize event ended: its tail may still be queued (held back as during it)
        self.skipping = False  # attached in the middle of an oversize event: nothing of it is sent
        self.floor = -1  # it has the history stream up to this sequence number (see KeptStream.attach)
        queues.add(self)

    @property
    def bound(self) -> int:
        """Bytes queued at most, at an event boundary: this client's share (see :class:`ClientQueues`)."""
        return self.queues.share()

    def queued(self) -> int:
        return self.writer.transport.get_write_buffer_size()

    def send(self, data: bytes) -> bool:
        """Write ``data`` as one chunk; False when the client is gone or too slow (then it is closed).

        Too slow is checked only at an event boundary (not while :attr:`big`): the response then ends there,
        with a comment saying why, and the client resumes from history."""
        if self.closed:
            return False
        if self.writer.transport.is_closing():
            self.finish("client gone")
            return False
        if not self.big and not self.draining and self.queued() > self.bound:
            self.finish("client too slow: response ended (it resumes from history)", clean=True, say=TOO_SLOW)
            return False
        if not data:
            return True
        self.writer.write(self.conn.send(h11.Data(data=data)))
        transcript = self.report.transcript
        if transcript is not None:
            transcript.add(data)
        return True

    def finish(self, why: str, clean: bool = False, say: bytes = b"") -> None:
        """Stop feeding this client; ``clean`` ends its response properly (the client then reconnects), after
        the comment ``say``. Ended in the middle of an oversize event, the client drops that event unfinished."""
        if self.closed:
            return
        self.closed = True
        self.report.ended = why
        if clean and not self.writer.transport.is_closing():
            with contextlib.suppress(h11.LocalProtocolError):
                if say and not self.big:
                    self.writer.write(self.conn.send(h11.Data(data=say)))
                self.writer.write(self.conn.send(h11.EndOfMessage()))
        if not self.done.done():
            self.done.set_result(why)


class KeptStream:
    """One upstream stream read by the proxy, across reconnects, with the clients attached to it."""

    def __init__(self, keeper: Keeper, feed: KeptFeed, request: UpstreamRequest) -> None:
        self.keeper = keeper
        self.feed = feed
        self.request = request
        self.post = request.method != "GET"
        self.clients: list[_Client] = []
        self.headers: list[tuple[bytes, bytes]] = []  # the upstream's first response headers, as sent to clients
        self.status = 200
        self.task: asyncio.Task[None] | None = None
        self.finished = False  # the upstream ended the stream for good (a POST stream's end): nothing follows
        self.reconnects = 0
        self._away_since: float | None = None
        self._away_events = 0
        self._away_bytes = 0
        self._grace: asyncio.TimerHandle | None = None
        self._open_big = False  # an oversize event is being passed on: a client attaching now skips its rest
        self._floors = 0  # clients attached with a floor (see attach): they are handed events one by one

    @property
    def key(self) -> tuple[str, str]:
        return (self.feed.session, self.feed.name)

    def start(self, response: Upstream | None) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(response))

    def attach(self, client: _Client, position: int = -1) -> None:
        """Feed ``client`` from now on; ``position``: it has the history stream's events up to this one (a
        replay), which this stream's clients may not have yet (another reader of the stream is ahead)."""
        client.skipping = self._open_big
        if position > self.feed.position:
            client.floor = position
            self._floors += 1
        self.clients.append(client)
        self._away_since = None
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None

    def detach(self, client: _Client) -> None:
        if client in self.clients:
            self.clients.remove(client)
        if self.clients or self._grace is not None:
            return
        if not self.finished and self.task is not None and not self.task.done():
            self._away_since = time.monotonic()
            self._away_events = self._away_bytes = 0
            self._grace = asyncio.get_running_loop().call_later(self.keeper.settings.grace, self._grace_over)
        elif self.finished:
            self._linger()

    def _grace_over(self) -> None:
        if not self.clients:
            self.keeper.stats.grace_expired += 1
            self.stop(f"no client for {self.keeper.settings.grace:g} s")

    def stop(self, why: str) -> None:
        """Stop reading the upstream and forget this stream (its history stays)."""
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        if self.task is not None and not self.task.done():
            self.task.cancel()
        for client in list(self.clients):
            client.finish(why, clean=True)
        self.clients.clear()
        self.keeper.forget(self, why)

    def _deliver(self, deliveries: list[Delivery]) -> bool:
        """Hand blocks to the clients; while none is attached, count what is buffered. False: bounds exceeded."""
        if not deliveries:
            return True
        was_open = self._open_big
        self._open_big = deliveries[-1].more  # (only the last piece can leave an oversize event open)
        if self.clients and not was_open and not self._floors and not any(d.oversize for d in deliveries):
            # One write per upstream read, however many events it held: the client's chunks need not match.
            data = deliveries[0].raw if len(deliveries) == 1 else b"".join(d.raw for d in deliveries)
            events = sum(d.events for d in deliveries if d.recorded)
            for client in list(self.clients):
                if client.send(data):
                    client.report.delivered += events
                else:
                    self.detach(client)
            return True
        if self.clients:
            for client in list(self.clients):
                if not self._hand(client, deliveries):
                    self.detach(client)
            if self._floors:
                self._lift_floors()
            return True
        if self._away_since is None:
            return True
        settings = self.keeper.settings
        self._away_events += sum(d.events for d in deliveries if d.recorded)
        self._away_bytes += sum(len(d.raw) for d in deliveries if d.recorded)
        return self._away_events <= settings.max_events and self._away_bytes <= settings.max_bytes

    def _lift_floors(self) -> None:
        """Clients whose floor the stream has passed are handed events as the others again."""
        position = self.feed.position
        for client in self.clients:
            if client.floor <= position:
                client.floor = -1
        self._floors = sum(c.floor >= 0 for c in self.clients)  # (those detached meanwhile count no more)

    @staticmethod
    def _hand(client: _Client, deliveries: list[Delivery]) -> bool:
        """Hand blocks to one client, one by one: so that it gets each oversize event whole or not at all (a
        client that attached in the middle of one skips its rest and is told), and skips those its replay
        went past (its floor)."""
        floor = client.floor
        for d in deliveries:
            if 0 <= d.seq <= floor:
                continue
            if d.oversize and client.skipping:
                if not d.more:
                    client.skipping = False
                    if not client.send(SKIPPED):
                        return False
                continue
            if not client.send(d.raw):
                return False
            client.report.delivered += d.events if d.recorded else 0
            if d.oversize:
                client.big = d.more
                client.draining = not d.more  # (what the event left queued is waited for, not held against it)
        return True

    async def _hold_back(self) -> None:
        """Inside an oversize event, which is not recorded and so reaches clients only live, wait until each
        client that is receiving it has taken what is queued for it before reading on: the upstream is then
        read no faster than those clients read. One that takes nothing for the grace time is dropped (it
        discards the unfinished event; nothing more can be said to it)."""
        grace = self.keeper.settings.grace
        for client in [c for c in self.clients if (c.big and c.queued() > c.bound) or c.draining]:
            try:
                await asyncio.wait_for(client.writer.drain(), grace)
            except (TimeoutError, ConnectionError):
                client.finish(f"client took nothing for {grace:g} s in the middle of an event too large to keep")
                client.writer.transport.abort()
                self.detach(client)
            else:
                client.draining = False  # the event's tail is taken: from here on, too slow is too slow

    def _broke_open(self) -> None:
        """The upstream connection ended inside an oversize event: its clients cannot get the rest of it (the
        next connection starts afresh), so those receiving it are ended (they drop the unfinished event and
        resume), and those skipping it are told it is over."""
        if not self._open_big:
            return
        self._open_big = False
        for client in list(self.clients):
            if client.big:
                client.finish("upstream broke in the middle of an event too large to keep", clean=True)
                self.detach(client)
            elif client.skipping:
                client.skipping = False
                if not client.send(SKIPPED):
                    self.detach(client)

    async def _run(self, response: Upstream | None) -> None:
        feed = self.feed
        backoff = self.keeper.settings.backoff
        retries = 0  # since the last connection that brought an event
        first = response is None  # a stream resumed from history connects at once
        try:
            while True:
                if response is None:
                    if not first:
                        retries += 1
                        delay = backoff.delay(retries, feed.retry)
                        if delay is None:
                            self.keeper.stats.gave_up += 1
                            self.stop(f"upstream gone: gave up after {backoff.tries} tries")
                            return
                        await asyncio.sleep(delay)
                    first = False
                    result = await self.keeper.open_upstream(self.request.resumed(feed.upstream_id))
                    if isinstance(result, int):
                        self.keeper.stats.gave_up += 1
                        self.stop(f"upstream refused to resume (HTTP {result})")
                        return
                    if result is None:
                        continue
                    response = result
                    if feed.stats.connections:
                        self.reconnects += 1
                        self.keeper.stats.reconnects += 1
                        for client in self.clients:
                            client.report.reconnects += 1
                        log.info(
                            "sse-resume: kept stream %s.%s: upstream reconnected (try %d)",
                            feed.session[:12],
                            feed.name,
                            retries,
                        )
                feed.connected()
                events = feed.stats.events
                clean = False
                try:
                    decoder = _decoder(response)
                    fed = 0  # bytes fed since this task last let the others run
                    async for chunk in response.body():
                        if decoder is not None:
                            chunk = decoder.decode(chunk)
                        for start in range(0, len(chunk), FAIR_SHARE):
                            piece = chunk if len(chunk) <= FAIR_SHARE else chunk[start : start + FAIR_SHARE]
                            if not self._deliver(feed.feed(piece)):
                                self.keeper.stats.buffer_full += 1
                                self.stop("client away and the kept stream reached its bounds")
                                return
                            fed += len(piece)
                            if fed >= FAIR_SHARE:
                                fed = 0
                                await asyncio.sleep(0)
                        if decoder is not None and decoder.error:
                            # Corrupt, or a decompression bomb: not a break to reconnect after, the end.
                            self._undecodable(decoder)
                            return
                        if self._open_big or any(c.draining for c in self.clients):
                            await self._hold_back()
                    if decoder is not None:
                        decoder.finish()
                        if decoder.error:  # the upstream ended inside compressed data: an end like any other
                            log.info(
                                "sse-resume: kept stream %s.%s: the %s body %s",
                                feed.session[:12],
                                feed.name,
                                decoder.encoding,
                                decoder.error,
                            )
                    clean = True
                except (UpstreamError, ValueError) as e:
                    log.info(
                        "sse-resume: kept stream %s.%s: upstream broke (%s)",
                        feed.session[:12],
                        feed.name,
                        e if isinstance(e, UpstreamError) else f"undecodable body: {type(e).__name__}",
                    )
                finally:
                    response.close()
                    response = None
                self._broke_open()
                self._deliver(feed.ended())  # what its last bytes complete (a final CR ends a line)
                progressed = feed.stats.events > events
                if self.post and (clean or not feed.upstream_id):
                    # A POST stream is one answer: once it ended it is complete, and without an id of the
                    # upstream's it cannot be resumed either. Clients get what is held, then the end.
                    self.finished = True
                    for client in list(self.clients):
                        client.finish("upstream stream complete", clean=True)
                    self.clients.clear()
                    self._linger()
                    return
                if progressed:
                    retries = 0
        except asyncio.CancelledError:
            if response is not None:
                response.close()
            raise
        except Exception as e:
            log.error(
                "sse-resume: internal error in kept stream %s.%s\n%s", feed.session[:12], feed.name, safe_traceback(e)
            )
            self.stop("internal error")

    def _undecodable(self, decoder: Decoder) -> None:
        feed = self.feed
        log.warning(
            "sse-resume: kept stream %s.%s: the %s body %s; the stream ends here (%d bytes decoded)",
            feed.session[:12],
            feed.name,
            decoder.encoding,
            decoder.error,
            decoder.produced,
        )
        self.stop(f"the {decoder.encoding} body {decoder.error}")

    def _linger(self) -> None:
        """A finished stream stays findable for the grace time, so a returning client gets its end."""
        if self._grace is None:
            self._grace = asyncio.get_running_loop().call_later(self.keeper.settings.grace, self.stop, "grace over")


class Keeper:
    """The keeper server and its kept streams."""

    def __init__(self, resumer: Resumer, settings: KeepSettings) -> None:
        self.resumer = resumer
        """Decides what a reconnecting client gets (shared with the addon's relays: one engine)."""
        self.store = resumer.store
        self.budget = resumer.budget
        """Bounds the bytes of replays queued for clients (each part, and all in flight); shared with the addon's."""
        self.settings = settings
        self.stats = KeeperStats()
        self.streams: dict[tuple[str, str], KeptStream] = {}
        self.port = 0
        self._tickets: dict[str, _Ticket] = {}
        self._reports: dict[str, KeepReport] = {}
        self.queues = ClientQueues(settings)
        """What is queued for the clients, bounded for all of them together."""
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._starting: asyncio.Task[None] | None = None

    # -- life cycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Listen at once (no await: mitmproxy may route a flow here before the loop runs again)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(1024)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._starting = asyncio.get_running_loop().create_task(self._listen(sock))
        log.info("sse-resume: keep mode: the proxy reads SSE upstreams itself (keeper on 127.0.0.1:%d)", self.port)

    async def _listen(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_server(self._serve, sock=sock, limit=MAX_HEAD)

    async def aclose(self) -> None:
        self.port = 0
        for stream in list(self.streams.values()):
            stream.stop("proxy shutting down")
        if self._starting is not None:
            await asyncio.gather(self._starting, return_exceptions=True)
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()

    def reconfigure(self, settings: KeepSettings) -> None:
        self.settings = settings
        self.queues.settings = settings

    # -- the addon's side ------------------------------------------------------------------------------------

    def admit(self, session: str, request: UpstreamRequest, last_event_id: str | None) -> str | None:
        """A ticket for a request the keeper will serve, or None when it cannot take more streams."""
        if not self.port:
            return None
        now = time.monotonic()
        for token in [t for t, ticket in self._tickets.items() if now - ticket.created > TICKET_TTL]:
            del self._tickets[token]
        if len(self.streams) + len(self._tickets) >= self.settings.max_streams:
            return None
        token = secrets.token_urlsafe(24)
        s = self.settings
        transcript = Transcript(s.transcript_bytes, s.transcript_budget) if s.transcript_bytes else None
        report = KeepReport(transcript=transcript)
        self._tickets[token] = _Ticket(session, request, last_event_id, now, report)
        self._reports[token] = report
        if len(self._reports) > MAX_REPORTS:
            del self._reports[next(iter(self._reports))]
        return token

    def live_report(self, token: str) -> KeepReport | None:
        """What is being done for the flow of ``token``, while it is open (the keeper keeps it)."""
        return self._reports.get(token)

    def report(self, token: str) -> KeepReport | None:
        """What was done for the flow of ``token`` (once: the keeper forgets it)."""
        self._tickets.pop(token, None)
        return self._reports.pop(token, None)

    def drop_session(self, session: str) -> int:
        """Stop the kept streams of an ended session; return how many there were."""
        streams = [stream for key, stream in self.streams.items() if key[0] == session]
        for stream in streams:
            stream.stop("session ended")
        return len(streams)

    def forget(self, stream: KeptStream, why: str) -> None:
        if self.streams.get(stream.key) is stream:
            del self.streams[stream.key]
            log.info("sse-resume: kept stream %s.%s ended: %s", stream.key[0][:12], stream.key[1], why)

    # -- upstream --------------------------------------------------------------------------------------------

    async def open_upstream(self, request: UpstreamRequest) -> Upstream | int | None:
        """Send ``request`` upstream: an SSE 200 response is returned open; a refusal that trying again cannot
        change (a 4xx such as 404 for an ended session) is its status; anything else is None (try again)."""
        response = await self._send(request)
        if not isinstance(response, Upstream):
            return None
        if _is_sse_ok(response):
            return response
        response.close()
        refused = 400 <= response.status < 500 and response.status not in (408, 425, 429)
        return response.status if refused else None

    async def _send(self, request: UpstreamRequest) -> Upstream | UpstreamError:
        try:
            return await open_upstream(
                request.method, request.url, list(request.headers), request.body, self.settings.tls
            )
        except UpstreamError as e:
            return e

    # -- serving mitmproxy's connections ----------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, h11.ProtocolError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception as e:
            log.error("sse-resume: internal error in the keeper\n%s", safe_traceback(e))
        finally:
            self._handlers.discard(task)
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        while True:  # one request after another, as long as mitmproxy keeps the connection
            token = await _read_request(conn, reader)
            if token is None:
                return
            ticket = self._tickets.pop(token, None)
            if ticket is None:
                writer.write(_simple(conn, 403, b"sse-resume keeper: unknown ticket\n"))
                return
            client = _Client(conn, writer, ticket.report, self.queues)
            try:
                stream = await self._open(ticket, client)
                if stream is not None:
                    await self._follow(stream, client, conn, reader)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                try:  # what is queued (a too slow client's last events) is bounded: wait for it a grace time
                    await asyncio.wait_for(writer.drain(), self.settings.grace)
                except TimeoutError:
                    writer.transport.abort()
                    return
            finally:
                self.queues.discard(client)  # (what was queued for it is taken, or goes with the connection)
            conn.start_next_cycle()

    @staticmethod
    async def _follow(stream: KeptStream, client: _Client, conn: h11.Connection, reader: asyncio.StreamReader) -> None:
        """Wait until the client's response ends: the kept stream ended it, or mitmproxy hung up."""
        # mitmproxy closes its connection when the client goes
        eof: asyncio.Future[bytes] = asyncio.ensure_future(reader.read(1))
        waited: list[asyncio.Future[Any]] = [eof, client.done]
        try:
            await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
        finally:
            client.finish("client gone")
            stream.detach(client)
            if not eof.done():
                # The read must be over before the connection is read again (for mitmproxy's next request):
                # a cancelled read still waits for data until its task runs, and a second read would fail.
                eof.cancel()
                await asyncio.wait([eof])  # (a cancellation of this task still goes through)
            if not eof.cancelled() and eof.exception() is None:
                conn.receive_data(eof.result())  # the start of mitmproxy's next request, or b"": it hung up

    async def _open(self, ticket: _Ticket, client: _Client) -> KeptStream | None:
        """Answer the ticket's request: attach to a kept stream, start one, or relay the upstream's answer.

        What a ``Last-Event-ID`` gets is the Resumer's decision, as for the relay (:meth:`Resumer.decide`); the
        keeper only serves it: a hit or up-to-date from history and the kept stream, anything else upstream."""
        session, request, last_id, report = ticket.session, ticket.request, ticket.last_event_id, ticket.report
        # A fresh request's stream is found with its first events (see KeptFeed): the one that holds them already
        # (clients of one session reading the same upstream stream share it), or a new one.
        history_stream, position, head, by_position = None, -1, None, True
        if last_id:
            decision = await self.resumer.decide(session, last_id, kept=True)
            report.outcome = decision.outcome
            report.note = decision.note
            report.decided = decision.stream
            if decision.outcome in ("hit", "up-to-date") and decision.stream is not None:
                return await self._resume(client, request, decision, report)
            # A miss, or behind (the events after the client's id are no longer held): the upstream is asked,
            # with the id the decision says. Behind, the client has its stream up to its id: what the upstream
            # sends again of that is dropped, what it sends after it goes to the client, recorded or held already.
            request = request.with_last_event_id(decision.forward_id)
            if decision.outcome == "behind":
                history_stream, head = decision.stream, decision.forward_id
                position, by_position = (decision.resume_seq, True) if decision.resume_seq is not None else (-1, False)
        response = await self._send(request)
        if isinstance(response, UpstreamError):
            # As mitmproxy answers when it cannot reach an upstream: 502, and the reason.
            log.warning("sse-resume: keeper: upstream %s unreachable: %s", _where(request.url), response)
            client.writer.write(_simple(client.conn, 502, f"sse-resume: upstream unreachable: {response}\n".encode()))
            report.outcome, report.note = "error", f"upstream unreachable: {response}"
            return None
        report.upstream_status = response.status
        if not _is_sse_ok(response) or not _decodable(response):
            report.outcome, report.note = "passed", "not an SSE stream: relayed as is"
            await self._relay_plain(client, response)
            return None
        feed = self._feed(session, history_stream, _last_id_of(request), position, head, by_position)
        report.feed = feed
        stream = KeptStream(self, feed, request)
        stream.status = response.status
        stream.headers = [(k, v) for k, v in response.headers if k.lower() not in DROP_FROM_STREAM]
        self.streams[stream.key] = stream
        self.stats.kept += 1
        self._respond(client, stream.status, stream.headers, report.outcome)
        if report.outcome in ("miss", "behind"):
            self._comment(client, report.note)
        stream.attach(client)
        stream.start(response)
        return stream

    async def _resume(
        self, client: _Client, request: UpstreamRequest, decision: Decision, report: KeepReport
    ) -> KeptStream:
        """Serve a hit or up-to-date decision: the replay, then the kept stream (started if none reads it)."""
        session, name = decision.session, decision.stream
        assert name is not None
        report.replayed = len(decision.replay)
        # No position in a session that has forgotten events (see the Resumer's _warned): a stream started for it
        # drops nothing by position, and the client is attached with no floor.
        by_position = decision.resume_seq is not None
        position = decision.replay[-1].seq if decision.replay else decision.resume_seq
        if position is None or not by_position:
            position = -1
        # The stream that reads this history stream furthest on (several may: clients of one session on requests
        # of their own), or a new one, resumed upstream, whose clients have what the replay sends.
        readers = [k for k in self.streams.values() if k.feed.session == session and k.feed.stream == name]
        stream = max(readers, key=lambda k: k.feed.position, default=None)
        if stream is None:
            upstream_id = _newest_upstream_id(decision, self.store)
            feed = self._feed(session, name, upstream_id, position, decision.forward_id, by_position)
            stream = KeptStream(self, feed, request.resumed(upstream_id))
            self.streams[stream.key] = stream
            self.stats.kept += 1
            stream.headers = [(b"content-type", SSE_TYPE.encode()), (b"cache-control", b"no-cache")]
            stream.start(None)
        report.feed = stream.feed
        self._respond(client, stream.status, stream.headers, decision.outcome)
        has = await self._replay(client, decision.note, session, name, decision.replay, position)
        if has is None:
            return stream  # (the client is finished: it is gone, or did not read)
        if self.streams.get(stream.key) is not stream:  # it stopped while the replay went out
            client.finish("kept stream ended during the replay", clean=True)
        elif stream.finished:
            client.finish("upstream stream complete", clean=True)
        else:
            stream.attach(client, has if by_position else -1)
        return stream

    def _feed(
        self,
        session: str,
        stream: str | None,
        upstream_id: str | None,
        position: int = -1,
        head: str | None = None,
        by_position: bool = True,
    ) -> KeptFeed:
        """A feed for a kept stream (see :class:`KeptFeed` for ``position``, ``head`` and ``by_position``)."""
        s = self.settings
        return KeptFeed(
            self.store,
            session,
            stream,
            position=position,
            head=head,
            by_position=by_position,
            assign_ids=s.assign_ids,
            max_event_bytes=s.max_event_bytes,
            upstream_id=upstream_id,
        )

    def _respond(self, client: _Client, status: int, headers: list[tuple[bytes, bytes]], outcome: str) -> None:
        head = [*headers, (b"sse-resume", f"{outcome}; kept".encode() if outcome != "kept" else b"kept")]
        client.writer.write(client.conn.send(h11.Response(status_code=status, headers=head, reason=_reason(status))))

    def _comment(self, client: _Client, note: str) -> None:
        client.send(b": sse-resume: %s\n\n" % note.encode())

    async def _replay(
        self, client: _Client, note: str, session: str, stream: str, events: Iterable[StoredEvent], position: int
    ) -> int | None:
        """Send the client the events it missed, in parts: each at most what the replay budget and the client's
        buffer allow (at least one event), the next one once mitmproxy has taken the last (the client reads),
        from history as it is then (events recorded meanwhile included). The last part goes with no await
        before the caller attaches the client to the live stream. Return the sequence number of the newest event
        of the stream the client has then (``position`` if none was sent); None: the client is finished (gone,
        or it took nothing for the grace time)."""
        self._comment(client, note)
        budget = self.budget
        pending = tuple(events)
        start = 0  # the next of them to send
        last_id = max((i for i, e in enumerate(pending) if e.id), default=-1)
        shortened = False
        while start < len(pending):
            space = client.bound - client.queued()  # (past its bound, a client is "too slow")
            k = fitting(pending, min(budget.room(), space), start=start) if last_id >= start else len(pending)
            if not shortened and start + k <= last_id and k < fitting(pending, min(budget.per_replay, space), 0, start):
                shortened = True  # (the in-flight bound made this part smaller)
                budget.shortened += 1
            end = len(pending) if start + k > last_id else start + k  # (events without id go with the last)
            charge = budget.charge(sum(len(pending[i].raw or b"") for i in range(start, end)))
            for i in range(start, end):
                if not client.send(pending[i].raw or b""):
                    charge.release()
                    return None
            start = end
            if start == len(pending):
                # Queued with the live events that follow: counted until this client's response ends.
                client.done.add_done_callback(functools.partial(_release, charge))
                break
            grace = self.settings.grace
            try:
                await asyncio.wait_for(client.writer.drain(), grace)
                await asyncio.sleep(0)  # (a drain that need not wait does not yield: let the others run)
            except (TimeoutError, ConnectionError):
                client.finish(f"client took nothing of its replay for {grace:g} s")
                client.writer.transport.abort()
                return None
            finally:
                charge.release()
            if client.closed:
                return None
        # What was recorded while the parts went out (a live stream goes on): sent with no await before the
        # caller attaches the client, so that it misses nothing in between.
        if pending:
            position = max(position, pending[-1].seq)
        if pending and start == len(pending) and (sent := pending[-1].id):
            found = self.store.lookup(session, sent)
            if found is None or found.stream != stream:
                client.send(b": sse-resume: the replay outlived its events in history: some may be missing\n\n")
                return position
            for event in found.after:
                if not client.send(event.raw or b""):
                    return None
                position = max(position, event.seq)
        return position

    async def _relay_plain(self, client: _Client, response: Upstream) -> None:
        """Not a stream to keep (an error, a JSON answer): pass it on as it came."""
        try:
            keep = HOP_BY_HOP_BYTES - {b"content-length"}
            headers = [(k, v) for k, v in response.headers if k.lower() not in keep]
            writer = client.writer
            status = response.status
            writer.write(client.conn.send(h11.Response(status_code=status, headers=headers, reason=response.reason)))
            async for chunk in response.body():
                writer.write(client.conn.send(h11.Data(data=chunk)))
                await writer.drain()
            writer.write(client.conn.send(h11.EndOfMessage()))
            await writer.drain()
        except (UpstreamError, OSError, h11.LocalProtocolError):
            client.writer.transport.abort()
        finally:
            response.close()


async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader) -> str | None:
    """Read one request from mitmproxy (its body is dropped: the ticket holds it); return its ticket header."""
    token = ""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            conn.receive_data(data)
            if not data and conn.their_state is h11.IDLE:
                return None
            continue
        if isinstance(event, h11.ConnectionClosed):
            return None
        if isinstance(event, h11.Request):
            token = next((v.decode("latin-1") for k, v in event.headers if k == TICKET_HEADER.encode()), "")
        elif isinstance(event, h11.EndOfMessage):
            return token


def _last_id_of(request: UpstreamRequest) -> str | None:
    return next((v for k, v in request.headers if k.lower() == "last-event-id"), None)


def _release(charge: Charge, _: asyncio.Future[str]) -> None:
    charge.release()


def _newest_upstream_id(decision: Decision, store: HistoryStore) -> str | None:
    """The newest id of the decision's stream that came from the upstream (proxy-made ids mean nothing to it)."""
    if decision.forward_id and not is_proxy_id(decision.forward_id):
        return decision.forward_id
    for event in reversed(store.events(decision.session)):
        if event.stream == decision.stream and event.id and not is_proxy_id(event.id):
            return event.id
    return None


def _is_sse_ok(response: Upstream) -> bool:
    return response.status == 200 and response.header("content-type").lower().startswith(SSE_TYPE)


def _decoder(response: Upstream) -> Decoder | None:
    return decoder_for(response.header("content-encoding"))


def _decodable(response: Upstream) -> bool:
    try:
        _decoder(response)
    except UnsupportedEncoding:
        return False
    return True


def _where(url: str) -> str:
    """An upstream for a log line: scheme, host and port, and a digest of the rest."""
    scheme, _, rest = url.partition("://")
    host, _, path = rest.partition("/")
    return f"{scheme}://{host}/...{digest(path, 4)}"


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _simple(conn: h11.Connection, status: int, body: bytes) -> bytes:
    head = [("content-type", "text/plain"), ("content-length", str(len(body))), ("connection", "close")]
    return (
        conn.send(h11.Response(status_code=status, headers=head, reason=_reason(status)))
        + conn.send(h11.Data(data=body))
        + conn.send(h11.EndOfMessage())
    )

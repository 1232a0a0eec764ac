"""The one owner of what the shell's addons share: the settings in effect, the history store, the resumer, the
keeper, and what is known of each open flow. Each addon gets it at construction; none keeps a copy."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Coroutine
from typing import Any

from mitmproxy import http

from sse_resume_core import MemoryHistory
from sse_resume_core._config import DEFAULT, Settings
from sse_resume_core._identity import IdentityRule, request_identity
from sse_resume_core._logsafe import redact_url
from sse_resume_core._resume import Relay, ReplayBudget, Resumer, ResumeStats
from sse_resume_core._store import HistoryStore, open_store
from sse_resume_core._view import TranscriptBudget
from sse_resume_keep import Keeper
from sse_resume_shell._features import feature
from sse_resume_shell._flow import FlowState

__all__ = ["Shell"]

log = logging.getLogger("sse_resume")


class Shell:
    """The state of one sse-resume addon (one per script's list of addons)."""

    def __init__(self) -> None:
        self.settings = Settings()
        self.sources: dict[str, str] = dict.fromkeys(Settings.model_fields, DEFAULT)  # where each setting came from
        self.store: HistoryStore = MemoryHistory(self.settings.limits())
        self.resume_stats = ResumeStats()
        self.unflushed: set[Relay] = set()  # relays with events to record, whichever resumer opened them
        self.budget = ReplayBudget(self.settings.max_replay_bytes, self.settings.max_replay_bytes_in_flight)
        self.transcript_budget = TranscriptBudget(self.settings.transcript_total_bytes)
        self.resumer = self._resumer()
        self.flows: dict[str, FlowState] = {}  # flow id -> what the addon knows of it, while it is open
        self.keeper: Keeper | None = None  # keep mode's server, while keep mode is on and the proxy runs
        self.live = False  # open flows show their transcripts as they grow (see sse_live_flows)
        self.running = False
        self._secret: bytes | None = None  # the key of session digests shared by proxies (with a Redis store)
        self._identity = IdentityRule()  # which headers tell users apart (see session_of)
        self._closing: set[asyncio.Task[None]] = set()  # stores and keepers closing after a change of settings

    def session_of(self, request: http.Request) -> str:
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

    def apply(self, settings: Settings) -> None:
        """Put valid settings in effect: the store, the identity rule, the budgets and the resumer."""
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
        self.budget.per_replay = settings.max_replay_bytes  # (the replays in flight stay counted)
        self.budget.in_flight = settings.max_replay_bytes_in_flight
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

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
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
            self.spawn(old.aclose())
        store.start()

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
            unflushed=self.unflushed,
            budget=self.budget,
        )

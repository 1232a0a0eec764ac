"""The addon's counters, listed once: the ``sse.stats`` command and the Prometheus collector both read them here.

Each :class:`Counter` has its name in ``sse.stats``, its Prometheus name (without the ``sse_resume_`` prefix;
none for those only ``sse.stats`` shows), its kind and its help text. They are read when asked for, from what the
store, the resumer, the replay budget, the keeper and a remote store's health count anyway: nothing is counted
twice, nothing on the hot path. No value or label carries a payload, an id or a credential.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from sse_resume_core import HistoryStats
from sse_resume_core._config import shown
from sse_resume_core._resume import ReplayBudget, ResumeStats
from sse_resume_core._store import StoreHealth
from sse_resume_keep import Keeper
from sse_resume_shell._shell import Shell

__all__ = ["CORE", "KEEP", "STORE", "Counter", "Sources", "readings", "stats"]


@dataclass(frozen=True, slots=True)
class Sources:
    """What the counters are read from, at one moment."""

    snap: HistoryStats
    resume: ResumeStats
    budget: ReplayBudget
    keeper: Keeper | None
    health: StoreHealth | None
    store: str  # the store setting, as shown (no secret)


@dataclass(frozen=True, slots=True)
class Counter:
    key: str  # its name in sse.stats
    metric: str | None  # its Prometheus name after "sse_resume_" (None: sse.stats only)
    kind: Literal["counter", "gauge"]
    doc: str
    read: Callable[[Sources], Any]  # a number; a dict of counts by label (reason) for a labelled counter


CORE = (
    Counter("sessions", "sessions", "gauge", "Sessions held.", lambda s: s.snap.sessions),
    Counter("events", "history_events", "gauge", "Events held.", lambda s: s.snap.events),
    Counter("bytes", "history_bytes", "gauge", "Bytes held (estimate, errs high).", lambda s: s.snap.bytes),
    Counter("stored", "events_recorded", "counter", "Events recorded into the history.", lambda s: s.snap.stored),
    Counter("evicted", "evictions", "counter", "Events evicted from history.", lambda s: dict(s.snap.evicted)),
    Counter("hits", "replay_hits", "counter", "Reconnects answered from history.", lambda s: s.resume.hits),
    Counter(
        "misses", "replay_misses", "counter", "Reconnects whose Last-Event-ID was not held.", lambda s: s.resume.misses
    ),
    Counter(
        "up_to_date",
        "up_to_date",
        "counter",
        "Reconnects forwarded upstream with nothing newer held.",
        lambda s: s.resume.up_to_date,
    ),
    Counter(
        "behind",
        None,
        "counter",
        "Reconnects forwarded upstream: newer events went by unheld.",
        lambda s: s.resume.behind,
    ),
    Counter(
        "replayed", "events_replayed", "counter", "Events sent to clients from history.", lambda s: s.resume.replayed
    ),
    Counter(
        "deduplicated",
        "events_deduplicated",
        "counter",
        "Events dropped because the client had them.",
        lambda s: s.resume.deduplicated,
    ),
    Counter("replays_in_flight", None, "gauge", "Replays built and not yet sent.", lambda s: s.budget.replays),
    Counter(
        "replay_bytes_in_flight",
        "replay_bytes_in_flight",
        "gauge",
        "Bytes of replays built and not yet sent.",
        lambda s: s.budget.held,
    ),
    Counter(
        "replays_shortened",
        "replays_shortened",
        "counter",
        "Replays served smaller because the in-flight bound was full.",
        lambda s: s.budget.shortened,
    ),
)
"""Always there."""

STORE = (
    Counter("store", None, "gauge", "The store (its URL without a password).", lambda s: s.store),
    Counter("store_up", "store_up", "gauge", "1 when the Redis store answers.", lambda s: _health(s).up),
    Counter("store_queued", "store_queued", "gauge", "Events waiting for Redis.", lambda s: _health(s).queued),
    Counter("store_writes", "store_writes", "counter", "Events written to Redis.", lambda s: _health(s).writes),
    Counter(
        "store_failures",
        "store_failures",
        "counter",
        "Failed exchanges with Redis (timeouts, errors).",
        lambda s: _health(s).failures,
    ),
    Counter(
        "store_dropped_writes",
        "store_dropped_writes",
        "counter",
        "Events given up while Redis was away too long.",
        lambda s: _health(s).dropped,
    ),
    Counter(
        "store_fallbacks",
        "store_fallbacks",
        "counter",
        "Lookups answered locally because Redis did not.",
        lambda s: _health(s).fallbacks,
    ),
)
"""With a remote store (one that reports its health)."""

KEEP = (
    Counter(
        "kept_streams", "kept_streams", "gauge", "Streams read by the proxy now.", lambda s: len(_keeper(s).streams)
    ),
    Counter("kept_streams_started", "kept_streams_started", "counter", "Streams kept so far.", lambda s: _kept(s).kept),
    Counter(
        "upstream_reconnects",
        "upstream_reconnects",
        "counter",
        "Kept streams' successful upstream reconnections.",
        lambda s: _kept(s).reconnects,
    ),
    Counter(
        "upstream_given_up",
        "upstream_given_up",
        "counter",
        "Kept streams ended after their reconnection tries.",
        lambda s: _kept(s).gave_up,
    ),
    Counter(
        "keep_grace_expired",
        "keep_grace_expired",
        "counter",
        "Kept streams ended because no client came back.",
        lambda s: _kept(s).grace_expired,
    ),
    Counter(
        "keep_buffer_full",
        "keep_buffer_full",
        "counter",
        "Kept streams ended at their bounds.",
        lambda s: _kept(s).buffer_full,
    ),
)
"""While keep mode runs."""


def sources(shell: Shell) -> Sources:
    return Sources(
        shell.store.snapshot(),
        shell.resume_stats,
        shell.budget,
        shell.keeper,
        shell.store.health(),
        shown(shell.settings)["store"],
    )


def readings(shell: Shell) -> Iterator[tuple[Counter, Any]]:
    """Each counter that applies now, with its value."""
    s = sources(shell)
    for counter in CORE:
        yield counter, counter.read(s)
    if s.health is None:
        yield STORE[0], "memory"  # (no health: the proxy's own memory)
    else:
        for counter in STORE:
            yield counter, counter.read(s)
    if s.keeper is not None:
        for counter in KEEP:
            yield counter, counter.read(s)


def stats(shell: Shell) -> dict[str, Any]:
    """The counters by their ``sse.stats`` names."""
    return {counter.key: value for counter, value in readings(shell)}


def _health(s: Sources) -> StoreHealth:
    assert s.health is not None
    return s.health


def _keeper(s: Sources) -> Keeper:
    assert s.keeper is not None
    return s.keeper


def _kept(s: Sources) -> Any:
    return _keeper(s).stats

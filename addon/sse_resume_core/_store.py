"""The storage interface the addon and the keeper talk to, so that another store (Redis) plugs in without
touching them.

Two kinds of methods. Those on the streaming hot path (``new_stream``, ``record``, ``record_many``, ``position``,
``stream_of``, ``newest_id``, ``lookup``) are synchronous and must not block: mitmproxy calls the stream callable
synchronously on its event loop, so a remote store answers them from local state and writes behind. ``find``
(a ``Last-Event-ID`` lookup, which a shared store may answer from elsewhere) and the life cycle are coroutines;
administration (the ``sse.*`` commands) is synchronous and local.

:func:`open_store` opens the store a setting names; the Redis store's packages are imported only for it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from sse_resume_core._history import (
    Found,
    HistoryLimits,
    HistoryStats,
    MemoryHistory,
    Recorded,
    SessionInfo,
    StoredEvent,
)

__all__ = ["REMOTE_SCHEMES", "HistoryStore", "StoreHealth", "open_store"]

REMOTE_SCHEMES = ("redis://", "rediss://", "unix://")
"""The URLs of a Redis store (redis-py's URL forms)."""


@dataclass(slots=True)
class StoreHealth:
    """How the exchange with a remote store goes. Counters only grow; ``up`` and ``queued`` are gauges."""

    up: bool = False
    writes: int = 0
    """Events written to the remote store."""
    failures: int = 0
    """Failed exchanges (writes or lookups): timeouts, refused connections, errors."""
    dropped: int = 0
    """Events (and session deletions) given up because too many waited for an unavailable store."""
    fallbacks: int = 0
    """Lookups answered by the local history alone because the store did not answer in time."""
    queued: int = 0
    """Events (and session deletions) waiting to be written, those being sent included."""


@runtime_checkable
class HistoryStore(Protocol):
    @property
    def limits(self) -> HistoryLimits:
        """The bounds in force (changed by :meth:`reconfigure`)."""
        ...

    @property
    def clock(self) -> Callable[[], float]:
        """The clock of the store's times (those of :class:`StoredEvent` and :class:`SessionInfo`)."""
        ...

    # -- the hot path -----------------------------------------------------------------------------------------

    def new_stream(self, session: str, name: str | None = None) -> str:
        """Open a new stream in ``session`` and return its name."""
        ...

    def record(self, session: str, stream: str, event_id: str | None, raw: bytes) -> Recorded:
        """Record one event of ``stream`` in arrival order; one the stream remembers already is not stored."""
        ...

    def record_many(self, session: str, stream: str, event_ids: list[str | None], raws: list[bytes]) -> None:
        """Record several events of ``stream`` in order, as :meth:`record` of each would."""
        ...

    def position(self, session: str, stream: str, event_id: str, raw: bytes) -> int | None:
        """The position of this event (id and bytes) in ``stream`` (comparable within the stream), if remembered."""
        ...

    def stream_of(self, session: str, event_id: str, raw: bytes) -> str | None:
        """The one stream of ``session`` that remembers this event, if exactly one does."""
        ...

    def newest_id(self, session: str, stream: str) -> str:
        """The newest non-empty id remembered for ``stream``, or ``""``."""
        ...

    def forgotten(self, session: str) -> int:
        """How many events of ``session`` are no longer remembered (grows while the session lives; 0 without)."""
        ...

    def lookup(self, session: str, event_id: str) -> Found | None:
        """:meth:`find`, answered from what this proxy holds now (no await: nothing changes meanwhile)."""
        ...

    # -- lookups that may ask elsewhere -----------------------------------------------------------------------

    async def find(self, session: str, event_id: str) -> Found | None:
        """Where ``event_id`` sits in ``session``, and the events held after it in its stream."""
        ...

    # -- administration ---------------------------------------------------------------------------------------

    def sessions(self) -> list[SessionInfo]:
        """A summary of each session held, least recently used first."""
        ...

    def events(self, session: str) -> list[StoredEvent]:
        """Every event in the history of ``session``, oldest first."""
        ...

    def drop_session(self, session: str) -> bool:
        """Forget a session whole."""
        ...

    def __iter__(self) -> Iterator[str]:
        """The keys of the sessions held (a copy: the store may change meanwhile)."""
        ...

    def clear(self) -> int:
        """Forget every session; return how many there were."""
        ...

    def reconfigure(self, limits: HistoryLimits) -> None:
        """Apply new bounds now (the replay mode cannot change)."""
        ...

    def snapshot(self) -> HistoryStats:
        """Counters and gauges, for metrics."""
        ...

    def health(self) -> StoreHealth | None:
        """How a remote store's exchange goes (``None``: the store is local)."""
        ...

    # -- life cycle --------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start what runs in the background (needs a running event loop; without one, nothing happens yet)."""
        ...

    async def aclose(self) -> None:
        """Write what is pending (briefly), then stop."""
        ...


def open_store(where: str, limits: HistoryLimits, timeout: float = 0.25) -> HistoryStore:
    """The store ``where`` names: ``"memory"`` (this proxy's own), or a Redis URL (see :data:`REMOTE_SCHEMES`)
    shared by several proxies, whose lookups wait ``timeout`` seconds for it at most.

    The Redis store's package (``sse_resume_redis``, and ``redis``) is imported only for a Redis URL: without it,
    ``ImportError``. Nothing connects yet (see :meth:`HistoryStore.start`).
    """
    if where == "memory":
        return MemoryHistory(limits)
    if not where.startswith(REMOTE_SCHEMES):
        raise ValueError("a store is 'memory' or a redis://, rediss:// or unix:// URL")
    redis = importlib.import_module("sse_resume_redis")
    store: HistoryStore = redis.RedisHistory(where, limits, timeout=timeout)
    return store

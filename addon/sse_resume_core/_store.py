"""The storage interface the addon talks to, so that another store (Redis) plugs in without touching it.

Two kinds of methods. Those on the streaming hot path (``new_stream``, ``record``, ``position``, ``newest_id``)
are synchronous and must not block: mitmproxy calls the stream callable synchronously on its event loop, so a
remote store answers them from local state and writes behind. Lookups and administration are coroutines.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from sse_resume_core._history import Found, HistoryStats, Recorded, SessionInfo, StoredEvent

__all__ = ["HistoryStore"]


@runtime_checkable
class HistoryStore(Protocol):
    def new_stream(self, session: str) -> str:
        """Open a new stream in ``session`` and return its name."""
        ...

    def record(self, session: str, stream: str, event_id: str | None, raw: bytes) -> Recorded:
        """Record one event of ``stream`` in arrival order; an id already held for the stream is not stored."""
        ...

    def record_many(self, session: str, stream: str, event_ids: list[str | None], raws: list[bytes]) -> None:
        """Record several events of ``stream`` in order, as :meth:`record` of each would."""
        ...

    def position(self, session: str, stream: str, event_id: str) -> int | None:
        """The position of ``event_id`` in ``stream`` (comparable within the stream), if held."""
        ...

    def newest_id(self, session: str, stream: str) -> str:
        """The newest non-empty id held for ``stream``, or ``""``."""
        ...

    def snapshot(self) -> HistoryStats:
        """Counters and gauges, for metrics."""
        ...

    async def find(self, session: str, event_id: str) -> Found | None:
        """Where ``event_id`` sits in ``session``, and the events held after it in its stream."""
        ...

    async def forget(self, session: str) -> bool:
        """Drop a session whole."""
        ...

    async def list_sessions(self) -> list[SessionInfo]: ...

    async def list_events(self, session: str) -> list[StoredEvent]: ...

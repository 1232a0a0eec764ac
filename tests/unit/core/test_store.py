"""The store a setting names (sse_resume_core._store.open_store): this proxy's memory, or Redis, whose packages
are imported only for it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sse_resume_core import HistoryLimits, HistoryStore, MemoryHistory
from sse_resume_core._store import open_store
from sse_resume_redis import RedisHistory

NOWHERE = "redis://127.0.0.1:9/0"  # never connected to (nothing connects before the store starts)


def test_open_store_makes_the_store_its_settings_name() -> None:
    limits = HistoryLimits(max_events=7)
    memory = open_store("memory", limits)
    assert memory.health() is None and memory.limits == limits
    assert type(memory) is MemoryHistory
    shared = open_store(NOWHERE, limits, timeout=0.5)
    assert isinstance(shared, RedisHistory) and shared.limits == limits and shared.timeout == 0.5
    with pytest.raises(ValueError, match="memory"):
        open_store("http://redis", limits)


def test_a_memory_store_opens_without_the_redis_packages() -> None:
    code = (
        "import sys; from sse_resume_core._store import open_store; from sse_resume_core import HistoryLimits; "
        "open_store('memory', HistoryLimits()); "
        "assert not {'redis', 'sse_resume_redis'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("where", ["redis://127.0.0.1:9/0", "rediss://127.0.0.1:9/0", "unix:///nowhere/redis.sock"])
def test_each_of_the_redis_url_forms_opens_a_redis_store(where: str) -> None:
    assert isinstance(open_store(where, HistoryLimits()), RedisHistory)


def test_the_storage_interface_is_what_the_memory_history_offers_and_nothing_less() -> None:
    assert isinstance(MemoryHistory(HistoryLimits()), HistoryStore)

    class Partial:
        """Lacks ``find``, which a Last-Event-ID lookup awaits."""

    members = {name for name in vars(HistoryStore) if not name.startswith("_") or name == "__iter__"}
    assert {"record", "lookup", "find", "health", "start", "aclose", "__iter__"} <= members
    for name in members - {"find"}:
        setattr(Partial, name, getattr(MemoryHistory, name, None))  # (limits and clock: attributes of its own)
    assert not isinstance(Partial(), HistoryStore)
    Partial.find = MemoryHistory.find  # type: ignore[attr-defined]
    assert isinstance(Partial(), HistoryStore)

"""The store a setting names (sse_resume_core._store.open_store): this proxy's memory, or Redis, whose packages
are imported only for it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sse_resume_core import HistoryLimits, MemoryHistory
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

"""The Redis store against a real redis-server: two stores in one process play two proxies sharing one Redis."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from harness import RedisServer, async_wait_for
from sse_resume_core import HistoryLimits, Recorded
from sse_resume_redis import RedisHistory

S = "session-a"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as s:
        yield s


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:8]}:"


def run[T](make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(make())


def event(n: int) -> bytes:
    return f"id: {n}\ndata: {n}\n\n".encode()


async def settled(*stores: RedisHistory) -> None:
    """Wait until every queued write has reached Redis (``queued`` counts the batch in flight too)."""
    await async_wait_for(lambda: all(not s.snapshot_health().queued for s in stores), 10, "queued writes")


async def back_up(store: RedisHistory) -> None:
    """Wait until ``store`` finds Redis answering again and has written all it held back."""
    await async_wait_for(
        lambda: store.snapshot_health().up and not store.snapshot_health().queued, 15, "Redis back, writes done"
    )


async def events_in_redis(store: RedisHistory, prefix: str) -> list[bytes]:
    """The members of the session's event set, oldest first."""
    members = await store._redis.zrange(f"{prefix}{{{S}}}:ev", 0, -1)
    return [m for m in members if isinstance(m, bytes)]


def store(server: RedisServer, prefix: str, **limits: object) -> RedisHistory:
    return RedisHistory(server.url, HistoryLimits(**limits), prefix=prefix, timeout=0.5)  # type: ignore[arg-type]


def test_a_second_proxy_finds_and_adopts_what_the_first_recorded(server: RedisServer, prefix: str) -> None:
    async def scenario() -> None:
        a, b = store(server, prefix), store(server, prefix)
        stream = a.new_stream(S)
        for n in range(1, 7):
            a.record(S, stream, str(n), event(n))
        await settled(a)
        found = await b.find(S, "3")
        assert found is not None and found.stream == stream
        assert [e.id for e in found.after] == ["4", "5", "6"]
        assert [e.raw for e in found.after] == [event(4), event(5), event(6)]
        assert found.newest_id == "6"
        # Adopted: b continues the stream as its own, positions comparable, a duplicate refused locally.
        assert b.position(S, stream, "6", event(6)) is not None
        assert b.record(S, stream, "6", event(6)) is Recorded.DUPLICATE
        assert await b.find(S, "nope") is None
        await a.aclose()
        await b.aclose()

    run(scenario)


def test_concurrent_proxies_never_store_an_event_twice(server: RedisServer, prefix: str) -> None:
    async def scenario() -> None:
        a, b = store(server, prefix), store(server, prefix)
        stream = a.new_stream(S)
        a.record(S, stream, "1", event(1))
        await settled(a)
        assert await b.find(S, "1") is not None
        for n in range(2, 50):  # both relay the same events of the stream, as two proxies of one session may
            a.record(S, stream, str(n), event(n))
            b.record(S, stream, str(n), event(n))
        await settled(a, b)
        members = await events_in_redis(a, prefix)
        ids = [m.split(b"\0")[2][1:].decode() for m in members]
        assert ids == [str(n) for n in range(1, 50)]
        await a.aclose()
        await b.aclose()

    run(scenario)


def test_trimmed_to_max_events_with_expiring_hash_tagged_keys(server: RedisServer, prefix: str) -> None:
    async def scenario() -> None:
        a = store(server, prefix, max_events=10, ttl=60)
        stream = a.new_stream(S)
        for n in range(1, 31):
            a.record(S, stream, str(n), event(n))
        await settled(a)
        r = a._redis
        keys = sorted(k.decode() if isinstance(k, bytes) else k for k in await r.keys(f"{prefix}{{*"))
        assert keys == [f"{prefix}{{{S}}}:{name}" for name in ("ev", "ids", "last", "seq")]
        assert len({key_slot(k.encode()) for k in keys}) == 1  # one Redis Cluster slot per session
        assert await r.zcard(keys[0]) == 10
        assert await r.hlen(f"{prefix}{{{S}}}:ids") == 10 and await r.hlen(f"{prefix}{{{S}}}:last") == 10
        assert all(0 < ttl <= 60 for ttl in [await r.ttl(k) for k in keys])
        fresh = store(server, prefix, max_events=10, ttl=60)
        assert await fresh.find(S, "20") is None  # trimmed
        found = await fresh.find(S, "21")
        assert found is not None and [e.id for e in found.after] == [str(n) for n in range(22, 31)]
        await a.aclose()
        await fresh.aclose()

    run(scenario)


def test_ids_only_mode_stores_no_payload(server: RedisServer, prefix: str) -> None:
    async def scenario() -> None:
        a = store(server, prefix, replay=False)
        stream = a.new_stream(S)
        a.record(S, stream, None, b"data: no id\n\n")  # nothing to keep in ids-only mode
        for n in range(1, 4):
            a.record(S, stream, str(n), event(n))
        await settled(a)
        members = await events_in_redis(a, prefix)
        assert len(members) == 3 and all(m.endswith(b"\0") for m in members)  # the raw part is empty
        b = store(server, prefix, replay=False)
        found = await b.find(S, "1")
        assert found is not None and [(e.id, e.raw) for e in found.after] == [("2", None), ("3", None)]
        await a.aclose()
        await b.aclose()

    run(scenario)


def test_events_without_id_and_hostile_ids_round_trip(server: RedisServer, prefix: str) -> None:
    async def scenario() -> None:
        a, b = store(server, prefix), store(server, prefix)
        stream = a.new_stream(S)
        hostile = "é\udcff\x01" + "x" * 10_000
        a.record(S, stream, hostile, b"id: hostile\n\n")
        a.record(S, stream, None, b"data: no id\n\n")
        a.record(S, stream, "2", event(2))
        await settled(a)
        found = await b.find(S, hostile)
        assert found is not None
        assert [(e.id, e.raw) for e in found.after] == [(None, b"data: no id\n\n"), ("2", event(2))]
        await a.aclose()
        await b.aclose()

    run(scenario)


def test_dropped_sessions_and_clear_reach_redis(server: RedisServer, prefix: str) -> None:
    async def scenario() -> None:
        a, b = store(server, prefix), store(server, prefix)
        stream = a.new_stream(S)
        a.record(S, stream, "1", event(1))
        a.record("other", a.new_stream("other"), "1", event(1))
        await settled(a)
        assert a.drop_session(S)
        await settled(a)
        assert await b.find(S, "1") is None
        assert await b.find("other", "1") is not None
        a.clear()
        await settled(a)
        assert await a._redis.keys(f"{prefix}{{*") == []
        await a.aclose()
        await b.aclose()

    run(scenario)


def test_redis_down_lookups_fall_back_writes_wait_and_land_when_it_returns(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    try:

        async def scenario() -> RedisServer:
            nonlocal server
            a = RedisHistory(server.url, timeout=0.2, prefix="p:")
            stream = a.new_stream(S)
            a.record(S, stream, "1", event(1))
            await settled(a)
            assert a.snapshot_health().up
            server.kill()
            for n in range(2, 6):
                a.record(S, stream, str(n), event(n))  # never blocks, never raises
            found = await a.find(S, "2")  # the local history answers
            assert found is not None and [e.id for e in found.after] == ["3", "4", "5"]
            health = a.snapshot_health()
            assert not health.up and health.failures >= 1 and health.fallbacks >= 1
            assert health.queued >= 4  # the writes wait for Redis
            server = server.restart()  # empty: what was queued is written when it answers
            await back_up(a)
            b = RedisHistory(server.url, timeout=0.5, prefix="p:")
            found = await b.find(S, "3")
            assert found is not None and [e.id for e in found.after] == ["4", "5"]
            await a.aclose()
            await b.aclose()
            return server

        server = run(scenario)
    finally:
        server.stop()


def test_damaged_entries_in_redis_are_ignored_not_fatal(
    server: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        a = store(server, prefix)
        await a._redis.hset(f"{prefix}{{{S}}}:last", "7", "1")
        await a._redis.zadd(f"{prefix}{{{S}}}:ev", {b"garbage without separators": 1})
        with caplog.at_level(logging.WARNING):
            assert await a.find(S, "7") is None  # logged, not raised
        assert "unreadable history in Redis" in caplog.text  # (the damaged entry was read, and refused)
        await a.aclose()

    run(scenario)


def test_slow_redis_never_holds_a_lookup_past_the_timeout(tmp_path: Path) -> None:
    """A Redis that stops answering (SIGSTOP: connections stay open, nothing comes back) is a slow one."""
    server = RedisServer(tmp_path)
    try:

        async def scenario() -> None:
            a = RedisHistory(server.url, timeout=0.2, prefix="slow:")
            stream = a.new_stream(S)
            a.record(S, stream, "1", event(1))
            await settled(a)
            os.kill(server.proc.pid, signal.SIGSTOP)
            try:
                a.record(S, stream, "2", event(2))
                found = await a.find(S, "1")  # answered locally once the timeout has passed
                assert found is not None and [e.id for e in found.after] == ["2"]
                assert a.snapshot_health().fallbacks == 1 and not a.snapshot_health().up
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)
            await back_up(a)
            b = RedisHistory(server.url, timeout=1, prefix="slow:")
            found = await b.find(S, "1")
            assert found is not None and [e.id for e in found.after] == ["2"]  # the write waited, then landed
            await a.aclose()
            await b.aclose()

        run(scenario)
    finally:
        server.stop()

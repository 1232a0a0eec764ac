"""The Redis store against a real redis-server: two stores in one process play two proxies sharing one Redis."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.utils
from redis.crc import key_slot

from harness import RedisServer, async_wait_for
from sse_resume_core import HistoryLimits, Recorded
from sse_resume_core._history import fingerprint
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


def event(n: int, data: str = "") -> bytes:
    return f"id: {n}\ndata: {data or n}\n\n".encode()


async def settled(*stores: RedisHistory) -> None:
    """Wait until every queued write has reached Redis (``queued`` counts the batch in flight too)."""
    await async_wait_for(lambda: all(not s.health().queued for s in stores), 10, "queued writes")


async def back_up(store: RedisHistory) -> None:
    """Wait until ``store`` finds Redis answering again and has written all it held back."""
    await async_wait_for(lambda: store.health().up and not store.health().queued, 15, "Redis back, writes done")


def key(prefix: str, name: str, session: str = S) -> str:
    """A session's key, in the layout's current version."""
    return f"{prefix}v2:{{{session}}}:{name}"


async def events_in_redis(store: RedisHistory, prefix: str) -> list[bytes]:
    """The members of the session's event set, oldest first."""
    members = await store._redis.zrange(key(prefix, "ev"), 0, -1)
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
        # The whole stream is adopted, from its first event: an upstream that starts over is recognised.
        assert [e.id for e in b.events(S)] == [str(n) for n in range(1, 7)]
        assert b.record(S, stream, "1", event(1)) is Recorded.DUPLICATE
        assert await b.find(S, "nope") is None
        await a.aclose()
        await b.aclose()

    run(scenario)


def test_a_batch_is_one_script_call(server: RedisServer, prefix: str) -> None:
    async def scenario() -> None:
        a = store(server, prefix)
        stream = a.new_stream(S)
        a.record(S, stream, "0", event(0))
        await settled(a)
        before = (await a._redis.info("commandstats"))["cmdstat_evalsha"]["calls"]
        a.record_many(S, stream, [str(n) for n in range(1, 201)], [event(n) for n in range(1, 201)])
        assert a.health().queued == 200
        await settled(a)
        assert (await a._redis.info("commandstats"))["cmdstat_evalsha"]["calls"] == before + 1
        assert a.health().writes == 201 and len(await events_in_redis(a, prefix)) == 201
        await a.aclose()

    run(scenario)


def test_adoption_records_nothing_twice_and_nothing_after_a_newer_event(server: RedisServer, prefix: str) -> None:
    async def scenario() -> None:
        a, b = store(server, prefix), store(server, prefix)
        stream = a.new_stream(S)
        a.record_many(S, stream, ["1", "2", "3"], [event(1), event(2), event(3)])
        await settled(a)
        assert await b.find(S, "2") is not None
        b.record(S, stream, "4", event(4))  # b relays the stream on; a relays it too, and then one more
        a.record_many(S, stream, ["4", "5"], [event(4), event(5)])
        await settled(a, b)
        found = await b.find(S, "3")  # adopts 5, after the 4 it holds
        assert found is not None and [e.id for e in found.after] == ["4", "5"] and found.complete
        assert [e.id for e in b.events(S)] == ["1", "2", "3", "4", "5"]
        assert [m.split(b"\0")[2][1:] for m in await events_in_redis(a, prefix)] == [b"1", b"2", b"3", b"4", b"5"]
        await a.aclose()
        await b.aclose()

    run(scenario)


@pytest.mark.parametrize("replay", [True, False])
def test_an_id_that_several_events_hold_in_redis_is_ambiguous_after_adoption(
    server: RedisServer, prefix: str, replay: bool
) -> None:
    async def scenario() -> None:
        a, b = store(server, prefix, replay=replay), store(server, prefix, replay=replay)
        first, second = a.new_stream(S), a.new_stream(S)  # an upstream that numbers every response from 1
        a.record_many(S, first, ["1", "2", "3"], [event(n, "first") for n in (1, 2, 3)])
        a.record_many(S, second, ["1", "2"], [event(n, "second") for n in (1, 2)])
        repeated = a.new_stream("other")  # and one that stamps ids by the second: one id, other bytes
        a.record_many("other", repeated, ["7", "7", "8"], [event(7, "a"), event(7, "b"), event(8)])
        await settled(a)
        found = await b.find(S, "2")
        assert found is not None and found.ambiguous == 2  # names no event: both streams were adopted
        assert {e.stream for e in b.events(S)} == {first, second} and len(b.events(S)) == 5
        found = await b.find(S, "3")  # held once: found, in its stream
        assert found is not None and not found.ambiguous and found.stream == first
        found = await b.find("other", "7")
        assert found is not None and found.ambiguous == 2
        found = await b.find("other", "8")
        assert found is not None and found.stream == repeated and not found.ambiguous
        await a.aclose()
        await b.aclose()

    run(scenario)


def test_copies_of_one_stream_recorded_by_two_proxies_name_one_event(server: RedisServer, prefix: str) -> None:
    """Two clients of one session, each fresh on a proxy of its own: each proxy records the upstream's stream
    under a name of its own. The same events (same ids, same bytes) in both copies are still one event each."""

    async def scenario() -> None:
        a, b, c = store(server, prefix), store(server, prefix), store(server, prefix)
        mine, theirs = b.new_stream(S), a.new_stream(S)
        b.record_many(S, mine, ["1", "2"], [event(1), event(2)])
        await settled(b)
        a.record_many(S, theirs, ["1", "2", "3"], [event(1), event(2), event(3)])
        await settled(a)
        found = await b.find(S, "2")  # b holds a copy: it is the one found, the other is not adopted
        assert found is not None and not found.ambiguous and found.stream == mine
        assert {e.stream for e in b.events(S)} == {mine}
        found = await c.find(S, "2")  # c holds none: the newest copy is adopted, whole
        assert found is not None and not found.ambiguous and found.stream == theirs
        assert [(e.stream, e.id) for e in c.events(S)] == [(theirs, "1"), (theirs, "2"), (theirs, "3")]
        # One copy holds the id twice, with other bytes (ids stamped by the second), the other copy once.
        b.record_many("other", b.new_stream("other"), ["7", "7"], [event(7, "a"), event(7, "b")])
        a.record("other", a.new_stream("other"), "7", event(7, "b"))
        await settled(a, b)
        found = await c.find("other", "7")
        assert found is not None and found.ambiguous == 3  # not one event: both copies adopted
        for each in (a, b, c):
            await each.aclose()

    run(scenario)


def test_keys_of_the_first_layout_are_ignored_and_deleted_with_their_session(server: RedisServer, prefix: str) -> None:
    async def scenario() -> None:
        a = store(server, prefix)
        old = [f"{prefix}{{{S}}}:{name}" for name in ("ev", "ids", "last", "seq")]  # version 1: no CRC
        r = a._redis
        await r.zadd(old[0], {b"1\0s.1\0" + b"1" + b"1\0" + repr(time.time()).encode() + b"\0" + event(1): 1})
        await r.hset(old[1], "s.1\x001", "1")
        await r.hset(old[2], "1", "1")
        await r.set(old[3], "1")
        await r.zadd(f"{prefix}{{other}}:ev", {b"1\0s.1\0" + b"11\0" + b"0\0" + event(1): 1})
        assert await a.find(S, "1") is None  # not read
        a.drop_session(S)
        await settled(a)
        assert await r.exists(*old) == 0
        a.clear()
        await settled(a)
        assert await r.keys(f"{prefix}*") == []
        await a.aclose()

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
        keys = sorted(k.decode() if isinstance(k, bytes) else k for k in await r.keys(f"{prefix}*"))
        assert keys == [key(prefix, name) for name in ("ev", "ids", "last", "seq")]
        assert len({key_slot(k.encode()) for k in keys}) == 1  # one Redis Cluster slot per session
        assert await r.zcard(keys[0]) == 10
        assert await r.hlen(key(prefix, "ids")) == 10 and await r.hlen(key(prefix, "last")) == 10
        assert all(0 < ttl <= 60 for ttl in [await r.ttl(k) for k in keys])
        fresh = store(server, prefix, max_events=10, ttl=60)
        assert await fresh.find(S, "20") is None  # trimmed
        found = await fresh.find(S, "21")
        assert found is not None and [e.id for e in found.after] == [str(n) for n in range(22, 31)]
        # The whole stream Redis holds is adopted (21 to 30), not only what follows the id; 20 is behind the bound.
        assert [e.id for e in fresh.events(S)] == [str(n) for n in range(21, 31)]
        assert fresh.position(S, stream, "21", event(21)) is not None
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
        assert [int(m.split(b"\0")[4]) for m in members] == [fingerprint(event(n)) for n in range(1, 4)]
        b = store(server, prefix, replay=False)
        found = await b.find(S, "1")
        assert found is not None and [(e.id, e.raw) for e in found.after] == [("2", None), ("3", None)]
        # Adopted with their fingerprints: the same event is recognised, another with the same id is not.
        assert b.position(S, stream, "1", event(1)) is not None
        assert b.position(S, stream, "1", event(1) + b": other bytes\n\n") is None
        assert b.record(S, stream, "3", event(3)) is Recorded.DUPLICATE
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
        assert await a._redis.keys(f"{prefix}*") == []
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
            assert a.health().up
            server.kill()
            for n in range(2, 6):
                a.record(S, stream, str(n), event(n))  # never blocks, never raises
            found = await a.find(S, "2")  # the local history answers
            assert found is not None and [e.id for e in found.after] == ["3", "4", "5"]
            health = a.health()
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


def test_no_connection_reads_the_installed_packages_metadata(
    server: RedisServer, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py 7.2 and later read their version from the installed packages' metadata for every new connection
    unless told it: 5 ms a connection, paid within a lookup's timeout after every Redis restart."""

    def metadata_read() -> str:
        raise AssertionError("a connection read the client library's version from the installed packages")

    monkeypatch.setattr(redis.utils, "get_lib_version", metadata_read)

    async def scenario() -> None:
        a = store(server, prefix)
        stream = a.new_stream(S)
        a.record(S, stream, "1", event(1))
        a.record(S, stream, "2", event(2))
        await settled(a)  # a connection for writes
        b = store(server, prefix)
        found = await b.find(S, "1")  # and one for lookups
        assert found is not None and [e.id for e in found.after] == ["2"]
        assert a.health().up and b.health().up and not b.health().fallbacks
        await a.aclose()
        await b.aclose()

    run(scenario)


def test_damaged_entries_in_redis_are_ignored_not_fatal(
    server: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        a = store(server, prefix)
        await a._redis.hset(key(prefix, "last"), "7", "1")
        await a._redis.zadd(key(prefix, "ev"), {b"garbage without separators": 1})
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
                assert a.health().fallbacks == 1 and not a.health().up
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

"""The Redis store without a Redis: it is a history store, how writes are queued and batches cut, and how a batch's
size follows timeouts."""

from __future__ import annotations

import asyncio
from collections import deque

import pytest

from sse_resume_core import HistoryLimits, HistoryStore, MemoryHistory, Recorded
from sse_resume_core._history import fingerprint
from sse_resume_redis import RedisHistory
from sse_resume_redis._store import BATCH, BATCH_BYTES, EVENT_COST, MIN_RATE, RATE, _take, _Write

NOWHERE = "redis://127.0.0.1:9/0"  # never connected to: these tests replace the exchange with Redis


def write(first: int, count: int = 1, size: int = 100) -> _Write:
    ids: list[str | None] = [str(n) for n in range(first, first + count)]
    return _Write("record", "s", "t", ids, [b"x" * size] * count, None, 0.0)


def ids_of(writes: list[_Write] | deque[_Write]) -> list[str | None]:
    return [event_id for w in writes for event_id in w.ids]


def event(n: int, data: str = "") -> bytes:
    return f"id: {n}\ndata: {data or n}\n\n".encode()


def test_a_redis_store_is_a_history_store_composed_of_a_memory_history() -> None:
    store: HistoryStore = RedisHistory(NOWHERE, HistoryLimits(max_events=5))  # (and mypy agrees)
    assert isinstance(store, HistoryStore)
    assert not isinstance(store, MemoryHistory)
    assert isinstance(store, RedisHistory) and isinstance(store.local, MemoryHistory)
    stream = store.new_stream("s")
    store.record_many("s", stream, ["1", "2"], [event(1), event(2)])
    assert store.lookup("s", "1") == store.local.lookup("s", "1")
    assert list(store) == ["s"] and store.limits.max_events == 5 and store.clock is store.local.clock
    health = store.health()
    assert health is not None and health.queued == 2 and not health.up


def test_record_many_queues_one_write_for_the_batch_and_only_new_events() -> None:
    store = RedisHistory(NOWHERE)
    stream = store.new_stream("s")
    store.record_many("s", stream, [str(n) for n in range(1, 101)], [event(n) for n in range(1, 101)])
    assert len(store._queue) == 1 and store.health().queued == 100
    assert ids_of(store._queue) == [str(n) for n in range(1, 101)]
    store.record_many("s", stream, ["99", "100"], [event(99), event(100)])  # held already: nothing to write
    assert len(store._queue) == 1
    # Some held, one new, one repeated with other bytes (a new event too), one without id: one write of the new.
    store.record_many("s", stream, ["100", "101", "1", None], [event(100), event(101), event(1, "b"), b"data: x\n\n"])
    assert len(store._queue) == 2 and store._queue[1].ids == ["101", "1", None]
    assert [e.id for e in store.events("s")][-3:] == ["101", "1", None]
    assert store.health().queued == 103
    assert store.record("s", stream, "102", event(102)) is Recorded.NEW and ids_of([store._queue[2]]) == ["102"]


def test_ids_only_writes_carry_fingerprints_and_no_payload() -> None:
    store = RedisHistory(NOWHERE, HistoryLimits(replay=False), wall=lambda: 5.0)
    stream = store.new_stream("s")
    store.record_many("s", stream, ["1", None, "2"], [event(1), b"data: no id\n\n", event(2)])
    (w,) = store._queue
    assert w.ids == ["1", "2"] and w.raws == [b"", b""] and w.crcs == [fingerprint(event(1)), fingerprint(event(2))]
    assert w.size == 2 * EVENT_COST and w.stream == stream
    crc1, crc2 = (str(fingerprint(event(n))) for n in (1, 2))
    assert list(w.arguments()) == [stream, b"1", "1", "5.0", crc1, b"", stream, b"2", "1", "5.0", crc2, b""]


def test_a_batch_is_bounded_in_events_and_in_bytes_and_keeps_the_order() -> None:
    queue = deque(write(n, size=1000) for n in range(10))
    batch, size = _take(queue, 4, 1_000_000)
    assert ids_of(batch) == ["0", "1", "2", "3"] and size == 4 * (1000 + EVENT_COST)
    batch, size = _take(queue, 100, 3 * 1200)  # an event counts its bytes and 200 more
    assert ids_of(batch) == ["4", "5", "6"] and size == 3600
    assert ids_of(queue) == ["7", "8", "9"]


def test_a_write_larger_than_the_batch_is_cut_in_order() -> None:
    queue = deque([write(1, 300), write(301, 2)])
    batch, size = _take(queue, BATCH, BATCH_BYTES)
    assert ids_of(batch) == [str(n) for n in range(1, BATCH + 1)] and size == BATCH * 300
    assert ids_of(queue) == [str(n) for n in range(BATCH + 1, 303)]  # the rest waits in front, in order
    batch, size = _take(queue, 10, 3 * 300)  # three fit in the bytes
    assert ids_of(batch) == [str(n) for n in range(BATCH + 1, BATCH + 4)] and size == 900
    assert queue[0].size == sum(len(raw) + EVENT_COST for raw in queue[0].raws)
    batch, _ = _take(queue, BATCH, BATCH_BYTES)
    assert ids_of(batch) == [str(n) for n in range(BATCH + 4, 303)] and not queue


def test_an_event_larger_than_the_budget_goes_alone() -> None:
    queue = deque([write(1, 3, size=5_000_000), write(4, 2, size=10)])
    batch, size = _take(queue, BATCH, BATCH_BYTES)
    assert ids_of(batch) == ["1"] and size == 5_000_200
    batch, _ = _take(queue, BATCH, BATCH_BYTES)
    assert ids_of(batch) == ["2"]
    batch, _ = _take(queue, BATCH, BATCH_BYTES)
    assert ids_of(batch) == ["3"]
    batch, _ = _take(queue, BATCH, BATCH_BYTES)
    assert ids_of(batch) == ["4", "5"] and not queue
    assert _take(queue, BATCH, BATCH_BYTES) == ([], 0)


def test_the_budget_follows_the_rate_down_to_its_floor() -> None:
    store = RedisHistory(NOWHERE)
    assert store._budget() == (BATCH, BATCH_BYTES)
    store._rate = MIN_RATE
    events, budget = store._budget()
    assert events == BATCH * MIN_RATE // RATE and budget == BATCH_BYTES * MIN_RATE // RATE


def test_the_queue_is_bounded_in_events_oldest_given_up_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sse_resume_redis._store.MAX_QUEUED", 250)
    store = RedisHistory(NOWHERE)
    stream = store.new_stream("s")
    for first in range(0, 300, 100):
        store.record_many("s", stream, [str(n) for n in range(first, first + 100)], [event(n) for n in range(100)])
    health = store.health()
    assert health.dropped == 100 and health.queued == 200 and ids_of(store._queue)[0] == "100"


def test_a_timed_out_batch_goes_back_in_order_and_the_next_ones_are_smaller() -> None:
    async def scenario() -> None:
        store = RedisHistory(NOWHERE)
        store._write_timeout = 0.01  # (the batch below is given 0.01 s and its bytes at the rate)

        async def never(batch: list[_Write]) -> None:
            await asyncio.Event().wait()  # Redis never answers

        sent: list[int] = []

        async def lands(batch: list[_Write]) -> None:
            sent.append(sum(map(len, batch)))

        store._queue.append(write(0, 300))  # (queued directly: no writer task is started)
        store._queued = 300
        store._write = never  # type: ignore[method-assign]
        with pytest.raises(TimeoutError):
            await store._flush_batch()
        assert store._rate == RATE / 2
        assert ids_of(store._queue) == [str(n) for n in range(300)]  # back, in order
        assert store.health().queued == 300 and store.health().writes == 0
        for _ in range(7):  # down to its floor, never below
            with pytest.raises(TimeoutError):
                await store._flush_batch()
        assert store._rate == MIN_RATE
        assert ids_of(store._queue) == [str(n) for n in range(300)]
        store._write = lands  # type: ignore[method-assign]
        await store._flush_batch()  # in far less than its time: twice the budget would have been in time
        assert sent == [BATCH * MIN_RATE // RATE] and store._rate == 2 * MIN_RATE
        assert store.health().writes == sent[0] and store.health().queued == 300 - sent[0]
        await store.aclose()

    asyncio.run(scenario())

"""The Redis store's write batches, without a Redis: how a batch is cut, and how its size follows timeouts."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import pytest

from sse_resume_redis import RedisHistory
from sse_resume_redis._store import BATCH, BATCH_BYTES, MIN_RATE, RATE, _size, _take

NOWHERE = "redis://127.0.0.1:9/0"  # never connected to: these tests replace the exchange with Redis


def record(n: int, size: int) -> tuple[str, Any]:
    return ("record", ("s", "t", str(n), b"x" * size, 0.0))


def test_a_batch_is_bounded_in_writes_and_in_bytes_and_keeps_the_order() -> None:
    queue = deque(record(n, 1000) for n in range(10))
    batch, size = _take(queue, 4, 1_000_000)
    assert [item[1][2] for item in batch] == ["0", "1", "2", "3"] and size == 4 * _size(batch[0])
    batch, size = _take(queue, 100, 3 * 1200)  # a write counts its bytes and 200 more
    assert [item[1][2] for item in batch] == ["4", "5", "6"] and size == 3600
    assert [item[1][2] for item in queue] == ["7", "8", "9"]


def test_a_write_larger_than_the_budget_goes_alone() -> None:
    queue = deque([record(1, 5_000_000), record(2, 10), record(3, 10)])
    batch, size = _take(queue, BATCH, BATCH_BYTES)
    assert len(batch) == 1 and size == 5_000_200
    batch, _ = _take(queue, BATCH, BATCH_BYTES)
    assert len(batch) == 2 and not queue
    assert _take(queue, BATCH, BATCH_BYTES) == ([], 0)


def test_the_budget_follows_the_rate_down_to_its_floor() -> None:
    store = RedisHistory(NOWHERE)
    assert store._budget() == (BATCH, BATCH_BYTES)
    store._rate = MIN_RATE
    writes, budget = store._budget()
    assert writes == BATCH * MIN_RATE // RATE and budget == BATCH_BYTES * MIN_RATE // RATE


def test_a_timed_out_batch_goes_back_in_order_and_the_next_ones_are_smaller() -> None:
    async def scenario() -> None:
        store = RedisHistory(NOWHERE)
        store._write_timeout = 0.01  # (the batch below is given 0.01 s and its bytes at the rate)

        async def never(batch: list[tuple[str, Any]]) -> None:
            await asyncio.Event().wait()  # Redis never answers

        sent: list[int] = []

        async def lands(batch: list[tuple[str, Any]]) -> None:
            sent.append(len(batch))

        store._queue.extend(record(n, 100) for n in range(300))  # (queued directly: no writer task is started)
        store._write = never  # type: ignore[method-assign]
        with pytest.raises(TimeoutError):
            await store._flush_batch()
        assert store._rate == RATE / 2
        assert [item[1][2] for item in store._queue] == [str(n) for n in range(300)]  # back, in order
        assert store.snapshot_health().queued == 300 and store.snapshot_health().writes == 0
        for _ in range(7):  # down to its floor, never below
            with pytest.raises(TimeoutError):
                await store._flush_batch()
        assert store._rate == MIN_RATE
        store._write = lands  # type: ignore[method-assign]
        await store._flush_batch()  # in far less than its time: twice the budget would have been in time
        assert sent == [BATCH * MIN_RATE // RATE] and store._rate == 2 * MIN_RATE
        await store.aclose()

    asyncio.run(scenario())

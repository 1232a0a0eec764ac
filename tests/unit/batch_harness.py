"""Streams of events as upstreams that write in batches send them, for the unit tests of the relay's and keep
mode's batch paths (tests/unit/core/test_resume.py, tests/unit/core/test_keep.py)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

EventMaker = Callable[[int], bytes]

PLAIN: tuple[EventMaker, ...] = (
    lambda k: b"id: %d\nevent: e\ndata: %d\n\n" % (k, k),
    lambda k: b"event: message\r\nid: %d\r\ndata: %d\r\n\r\n" % (k, k),  # (CRLF, as sse-starlette writes)
    lambda k: b"data: %d\n\n" % k,
)
"""Event ``k`` in each of the plain kinds a batch path takes whole (with ids, LF or CRLF; without)."""


def run_of_events(rng: random.Random, n: int, makers: Sequence[EventMaker]) -> list[bytes]:
    """A run of 1 to 20 events numbered from ``n``, all made by one of ``makers`` (picked at random): so a chunk
    of a few runs is now whole events of one plain kind, now a mix the parser has to read."""
    make = rng.choice(makers)
    return [make(k) for k in range(n, n + rng.randint(1, 20))]

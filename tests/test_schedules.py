"""Generated schedules of disconnects, reconnects and upstream behaviours against the sans-I/O core.

A simulated client reads a stream of numbered events through the Resumer and its relays. Generated: how the
upstream answers a Last-Event-ID (resume after it, ignore it and start at 1, or overlap a few events), how its
bytes are chunked, where the client's connection breaks, and whether the bytes in flight at that moment are
lost. Invariant: the client gets every event at most once, in upstream order, and, once a connection runs to the
end, all of them (the history here is large enough to hold every event).
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_resume_core import HistoryLimits, MemoryHistory, SSEParser
from sse_resume_core._resume import Resumer


@dataclass
class Client:
    received: list[int] = field(default_factory=list)
    last_event_id: str = ""
    retry: int | None = None

    def connection(self) -> SSEParser:
        parser = SSEParser()  # a new stream per connection, as EventSource does...
        parser.last_event_id = self.last_event_id  # ...which keeps its last event id across them
        return parser

    def take(self, parser: SSEParser, data: bytes) -> None:
        for block in parser.feed(data):
            if block.retry is not None:
                self.retry = block.retry
            if block.data is not None:
                self.received.append(int(block.data))
        self.last_event_id = parser.last_event_id


def upstream_bytes(behaviour: str, forward_id: str | None, total: int, overlap: int) -> bytes:
    last = int(forward_id) if forward_id and forward_id.isdigit() else 0
    if behaviour == "resume":
        start = last + 1
    elif behaviour == "ignore":
        start = 1
    else:  # "overlap": resends a few events it thinks the client may have lost
        start = max(1, last + 1 - overlap)
    return b"".join(b"id: %d\ndata: %d\n\n" % (n, n) for n in range(start, total + 1))


def chunks_of(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


@st.composite
def schedules(draw: st.DrawFn) -> dict[str, object]:
    return {
        "total": draw(st.integers(min_value=1, max_value=25)),
        "behaviour": draw(st.sampled_from(["resume", "ignore", "overlap"])),
        "overlap": draw(st.integers(min_value=1, max_value=5)),
        "replay": draw(st.booleans()),
        "inline": draw(st.booleans()),
        "connections": draw(
            st.lists(
                st.tuples(
                    st.lists(st.integers(min_value=0, max_value=2000), max_size=6),  # chunk cut points
                    st.integers(min_value=0, max_value=30),  # break after this many chunks
                    st.booleans(),  # the bytes relayed in the breaking chunk are lost with the connection
                ),
                max_size=8,
            )
        ),
    }


def run(schedule: dict[str, object]) -> Client:
    total = int(schedule["total"])  # type: ignore[call-overload]
    behaviour = str(schedule["behaviour"])
    replay = bool(schedule["replay"])
    resumer = Resumer(MemoryHistory(HistoryLimits(max_events=10_000, replay=replay)), replay=replay)
    client = Client()
    connections: list[tuple[list[int], int, bool]] = list(schedule["connections"])  # type: ignore[call-overload]
    connections.append(([], 10**6, False))  # at last, a connection that runs to the end
    for cuts, break_after, lose in connections:
        for _ in range(10):  # a replay response is read whole, then the client reconnects at once
            decision = asyncio.run(resumer.decide("s", client.last_event_id, bool(schedule["inline"])))
            parser = client.connection()
            if not decision.body:
                break
            client.take(parser, decision.body)
            assert client.retry == resumer.replay_retry
        else:
            raise AssertionError("a client kept getting replays")
        data = upstream_bytes(behaviour, decision.forward_id, total, int(schedule["overlap"]))  # type: ignore[call-overload]
        relay = resumer.open(decision)
        pieces = chunks_of(data, cuts) if data else []
        for i, piece in enumerate(pieces):
            out = relay.feed(piece)
            if i >= break_after:
                if not lose:
                    client.take(parser, out)
                break
            client.take(parser, out)
        else:
            client.take(parser, relay.close())
    return client


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules())
def test_every_event_at_most_once_in_order_and_none_missing(schedule: dict[str, object]) -> None:
    client = run(schedule)
    total = int(schedule["total"])  # type: ignore[call-overload]
    assert client.received == sorted(set(client.received)), client.received  # no duplicate, upstream order
    assert client.received == list(range(1, total + 1)), (client.received, schedule)  # nothing missing


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=12), st.text(max_size=300))
def test_arbitrary_bytes_and_ids_never_raise_and_pass_byte_for_byte(chunks: list[bytes], last_event_id: str) -> None:
    resumer = Resumer(MemoryHistory(HistoryLimits(max_events=50)), dedupe_window=0, max_event_bytes=128)
    relay = resumer.open(asyncio.run(resumer.decide("s", None)))
    out = b"".join(relay.feed(c) for c in chunks) + relay.close()
    assert out == b"".join(chunks)  # a fresh stream without a dedupe window is passed on exactly
    decision = asyncio.run(resumer.decide("s", last_event_id))
    assert decision.outcome in ("fresh", "hit", "up-to-date", "miss")
    again = resumer.open(decision)
    _ = b"".join(again.feed(c) for c in chunks) + again.close()  # a resumed relay on the same bytes: no error
    assert relay.failed is None and again.failed is None

"""Resume decisions and the relay, without any I/O: the store, the decisions and the bytes that come out."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from batch_harness import PLAIN, run_of_events
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sse_resume_core import Block, HistoryLimits, MemoryHistory, SSEParser, _resume
from sse_resume_core._parser import COMPILED, MAX_RETRY, plain_batch, single_event_id, single_event_id_py
from sse_resume_core._resume import BATCH, Decision, Relay, Resumer, session_key


def ev(n: int) -> bytes:
    return b"id: %d\ndata: %d\n\n" % (n, n)


def decide(r: Resumer, session: str, last: str | None, inline: bool = False) -> Decision:
    return asyncio.run(r.decide(session, last, inline))


def stream_of(r: Resumer, decision: Decision, chunks: list[bytes]) -> bytes:
    relay = r.open(decision)
    return b"".join(relay.feed(c) for c in chunks) + relay.close()


def resumer(**kw: object) -> Resumer:
    replay = bool(kw.pop("replay", True))
    return Resumer(MemoryHistory(HistoryLimits(replay=replay)), replay=replay, **kw)  # type: ignore[arg-type]


def test_fresh_stream_is_recorded_and_passed_through() -> None:
    r = resumer()
    data = ev(1) + b": ping\n\n" + ev(2) + b"retry: 5\n\ndata: x"
    assert stream_of(r, decide(r, "s", None), [data]) == data
    assert [e.id for e in r.store.events("s")] == ["1", "2"]  # type: ignore[attr-defined]


def test_output_is_block_aligned_and_loses_nothing() -> None:
    r = resumer()
    relay = r.open(decide(r, "s", None))
    assert relay.feed(b"id: 1\nda") == b""
    assert relay.feed(b"ta: 1\n\nid: 2") == ev(1)
    assert relay.close() == b"id: 2"


def test_hit_answers_from_history_with_a_short_retry() -> None:
    r = resumer()
    stream_of(r, decide(r, "s", None), [ev(n) for n in range(1, 6)])
    d = decide(r, "s", "2")
    assert d.outcome == "hit"
    assert d.body == b": sse-resume: served 3 events from history\n\n" + ev(3) + ev(4) + ev(5) + b"retry: 50\n\n"


def test_after_a_hit_the_next_resume_restores_retry() -> None:
    r = resumer()
    stream_of(r, decide(r, "s", None), [b"retry: 700\n\n", *(ev(n) for n in range(1, 4))])
    assert decide(r, "s", "1").outcome == "hit"
    back = decide(r, "s", "3")
    assert (back.outcome, back.prefix, back.forward_id) == ("up-to-date", b"retry: 700\n\n", "3")
    assert decide(r, "s", "3").prefix == b""  # once


def test_inline_hit_prefixes_the_live_stream_and_drops_what_it_replayed() -> None:
    r = resumer()
    stream_of(r, decide(r, "s", None), [ev(n) for n in range(1, 5)])
    d = decide(r, "s", "2", inline=True)
    assert (d.outcome, d.forward_id, d.body) == ("hit", "4", b"")
    # an upstream that ignores Last-Event-ID starts again from 1
    out = stream_of(r, d, [ev(n) for n in range(1, 7)])
    assert out == b": sse-resume: served 2 events from history, then the live stream\n\n" + b"".join(
        ev(n) for n in (3, 4, 5, 6)
    )


def test_up_to_date_forwards_and_drops_what_the_client_has() -> None:
    r = resumer()
    stream_of(r, decide(r, "s", None), [ev(n) for n in range(1, 4)])
    d = decide(r, "s", "3")
    assert (d.outcome, d.forward_id) == ("up-to-date", "3")
    assert stream_of(r, d, [ev(n) for n in range(1, 6)]) == ev(4) + ev(5)
    assert [e.id for e in r.store.events("s")] == ["1", "2", "3", "4", "5"]  # type: ignore[attr-defined]


def test_replay_stops_at_the_newest_event_with_an_id() -> None:
    r = resumer()
    stream_of(r, decide(r, "s", None), [ev(1), ev(2), b"data: no id\n\n"])
    d = decide(r, "s", "2")
    assert d.outcome == "up-to-date"  # the id-less tail is not replayed: the client would loop on it
    d = decide(r, "s", "1")
    assert d.outcome == "hit" and [e.id for e in d.replay] == ["2"]


def test_miss_forwards_with_a_comment_or_restarts() -> None:
    r = resumer()
    d = decide(r, "s", "ancient-id")
    assert (d.outcome, d.forward_id, d.stream) == ("miss", "ancient-id", None)
    assert d.prefix.startswith(b": sse-resume: Last-Event-ID unknown")
    assert stream_of(r, d, [ev(1)]).startswith(b": sse-resume:")
    r2 = resumer(stale_policy="restart")
    assert decide(r2, "s", "x").forward_id is None


def test_ids_only_mode_never_replays_and_forwards_the_clients_id() -> None:
    r = resumer(replay=False)
    stream_of(r, decide(r, "s", None), [ev(n) for n in range(1, 6)])
    d = decide(r, "s", "2")
    assert (d.outcome, d.forward_id, d.body) == ("behind", "2", b"")
    told = b": sse-resume: newer events seen but not kept (ids only): resuming upstream from the client's "
    told += b"Last-Event-ID\n\n"
    assert d.prefix == told
    assert stream_of(r, d, [ev(n) for n in range(1, 7)]) == told + ev(3) + ev(4) + ev(5) + ev(6)


def test_window_drops_repeats_within_a_connection() -> None:
    r = resumer(dedupe_window=2)
    out = stream_of(r, decide(r, "s", None), [ev(1), ev(2), ev(1), ev(3), ev(2)])
    assert out == ev(1) + ev(2) + ev(3)  # 1 and 2 were among the last 2 ids when they came again


@pytest.mark.parametrize("chunked", [True, False], ids=["event-per-chunk", "events-together"])
def test_window_forgets_ids_older_than_it_holds(chunked: bool) -> None:
    # The window holds the last `window` ids, and up to BATCH more between its cuts: never fewer, never many more.
    r = resumer(dedupe_window=2)
    later = [ev(n) for n in range(10, 10 + BATCH + 2)]
    chunks = [ev(1), *later, ev(1)] if chunked else [ev(1), b"".join(later), ev(1)]
    out = stream_of(r, decide(r, "s", None), chunks)
    assert out == ev(1) + b"".join(later) + ev(1)
    relay = r.open(decide(r, "t", None))
    for n in range(1000):
        relay.feed(ev(n))
        assert relay._window is not None and min(n + 1, 2) <= len(relay._window) <= 2 + BATCH


def test_concurrent_connection_on_a_stream_is_not_starved() -> None:
    r = resumer()
    stream_of(r, decide(r, "s", None), [ev(1), ev(2)])
    a, b = r.open(decide(r, "s", "2")), r.open(decide(r, "s", "2"))
    assert a.feed(ev(3)) == ev(3)
    assert b.feed(ev(3)) == ev(3)  # recorded by a, but b's client never had it


def test_relay_survives_a_store_error_and_loses_nothing() -> None:
    r = resumer()
    relay = r.open(decide(r, "s", None))
    relay.feed(b"id: 1\nda")

    def broken(*args: object) -> None:
        raise RuntimeError("store down")

    r.store.record = r.store.record_many = broken  # type: ignore[method-assign,assignment]
    # Events are relayed at once and recorded in batches: the error comes with the flush, while the parser holds
    # the start of the next block. The relay turns to plain pass-through, handing that start on first.
    out = relay.feed(b"ta: 1\n\nid: 2\ndata: 2\n\nid: 3")
    assert out == b"id: 1\ndata: 1\n\nid: 2\ndata: 2\n\n"
    relay.flush()
    assert isinstance(relay.failed, RuntimeError)
    assert relay.feed(b"\ndata: 3\n\n") == b"id: 3\ndata: 3\n\n"
    assert relay.feed(b"id: 4") == b"id: 4"
    assert relay.close() == b""


def test_events_the_general_path_relays_are_batched_and_a_decision_sees_them() -> None:
    r = resumer()
    relay = r.open(decide(r, "s", None))
    crlf = b"id: 1\r\ndata: 1\r\n\r\nid: 2\r\ndata: 2\r\n\r\n"  # (CR line ends: never the hot path)
    assert relay.feed(crlf) + relay.feed(ev(3)) == crlf + ev(3)
    assert len(relay._rec.raws) == 3 and relay.stats.recorded == 0  # held for one batch, in order
    d = decide(r, "s", "1")  # a decision records what every relay holds first
    assert d.outcome == "hit" and [e.id for e in d.replay] == ["2", "3"]
    assert relay.stats.recorded == 3 and not relay._rec.raws


def test_legacy_stream_hands_on_what_the_parser_held_once() -> None:
    r = resumer()
    relay = r.open(decide(r, "s", None))
    first = b"event: endpoint\ndata: /messages/?session_id=abc\n\nevent: mess"
    out = relay.feed(first) + relay.feed(b"age\ndata: {}\n\n") + relay.feed(b"data: unfinished") + relay.close()
    assert out == first + b"age\ndata: {}\n\ndata: unfinished"
    assert relay.passthrough and relay.stats.recorded == 0


class _BrokenParser(SSEParser):
    """A parser with a bug that makes it raise inside feed() or close(), once the block is held."""

    broken = False

    def _block(self, raw: bytes, lines: list[bytes]) -> Block:
        if self.broken:
            raise RuntimeError("parser bug")
        return super()._block(raw, lines)


def test_relay_failure_hands_on_held_bytes() -> None:
    # The parser raises after it took up the bytes it held: they still reach the client, then the chunk.
    r = resumer()
    relay: Relay = r.open(decide(r, "s", None))
    relay._parser = parser = _BrokenParser()
    assert relay.feed(b"id: 1\ndata: 1\n\nid: 2\n: note\ndata: par") == ev(1)
    parser.broken = True
    assert relay.feed(b"tial\n\nid: 3") == b"id: 2\n: note\ndata: partial\n\nid: 3"
    assert isinstance(relay.failed, RuntimeError)
    assert relay.feed(b"\n\n") == b"\n\n"
    assert relay.close() == b""


def test_relay_failure_at_close_hands_on_held_bytes() -> None:
    r = resumer()
    relay: Relay = r.open(decide(r, "s", None))
    relay._parser = parser = _BrokenParser()
    assert relay.feed(b"id: 1\ndata: 1\n\nid: 2\ndata: 2\r") == ev(1)  # (a CR at the end waits for an LF)
    assert relay.feed(b"\r") == b""
    parser.broken = True
    assert relay.close() == b"id: 2\ndata: 2\r\r"
    assert isinstance(relay.failed, RuntimeError)


def test_huge_retry_is_relayed_and_restored_clamped() -> None:
    r = resumer()
    huge = b"retry: " + b"9" * 5000 + b"\n"
    data = [ev(1), b"id: 2\nevent: x\ndata: hello\n", huge + b"\n", ev(3)]
    relay = r.open(decide(r, "s", None))
    assert b"".join(relay.feed(c) for c in data) + relay.close() == b"".join(data)
    assert relay.failed is None
    assert decide(r, "s", "1").outcome == "hit"
    assert decide(r, "s", "3").prefix == b"retry: %d\n\n" % MAX_RETRY


def test_retry_of_an_unfinished_final_block_is_restored() -> None:
    # A client applied the retry line as it read it, though the block never dispatched: restored after a replay.
    r = resumer()
    data = b"retry: 700\n\n" + ev(1) + ev(2) + b"retry: 7777\ndata: never"
    assert stream_of(r, decide(r, "s", None), [data]) == data
    assert decide(r, "s", "1").outcome == "hit"
    assert decide(r, "s", "2").prefix == b"retry: 7777\n\n"


BOM = b"\xef\xbb\xbf"


def test_bom_is_relayed_but_never_recorded() -> None:
    r = resumer()
    first = BOM + b"id: 1\nevent: update\ndata: a\n\n"
    assert stream_of(r, decide(r, "s", None), [first, ev(2)]) == first + ev(2)
    d = decide(r, "s", "2")  # the stream goes on upstream, and its next response starts with a BOM again
    assert stream_of(r, d, [BOM + b"id: 3\nevent: update\ndata: c\n\n"]) == BOM + b"id: 3\nevent: update\ndata: c\n\n"
    replay = decide(r, "s", "1").body
    assert BOM not in replay and b"id: 3\nevent: update\ndata: c\n\n" in replay
    assert all(BOM not in (e.raw or b"") for e in r.store.events("s"))  # type: ignore[attr-defined]


@pytest.mark.parametrize("inline", [False, True])
def test_bom_goes_in_front_of_a_prefix(inline: bool) -> None:
    r = resumer()
    miss = decide(r, "s", "unknown")
    out = stream_of(r, miss, [BOM + b"id: 1\nevent: update\ndata: a\n\n", ev(2), ev(3)])
    assert out == BOM + miss.prefix + b"id: 1\nevent: update\ndata: a\n\n" + ev(2) + ev(3)
    d = decide(r, "s", "1", inline=inline)
    if not inline:  # a replay, then the restored retry in front of the upstream's next response
        d = decide(r, "s", "3")
    assert d.prefix
    assert stream_of(r, d, [BOM, ev(4)]) == BOM + d.prefix + ev(4)


def test_bom_that_comes_after_the_prefix_went_out_is_dropped() -> None:
    r = resumer()
    miss = decide(r, "s", "unknown")
    relay = r.open(miss)
    assert relay.feed(b"\xef\xbb") == miss.prefix  # (the prefix goes with the upstream's first bytes)
    assert relay.feed(b"\xbfid: 1\ndata: 1\n\n") + relay.close() == ev(1)


def test_session_key_separates_sessions_urls_and_credentials() -> None:
    base = session_key("s1", "https", "Example.com", 443, "/mcp", ["Bearer a", ""])
    assert base == session_key("s1", "HTTPS", "example.com", 443, "/mcp", ["Bearer a", ""])
    others = [
        session_key("s2", "https", "example.com", 443, "/mcp", ["Bearer a", ""]),
        session_key("s1", "http", "example.com", 443, "/mcp", ["Bearer a", ""]),
        session_key("s1", "https", "example.com", 8443, "/mcp", ["Bearer a", ""]),
        session_key("s1", "https", "example.com", 443, "/mcp?x=1", ["Bearer a", ""]),
        session_key("s1", "https", "example.com", 443, "/mcp", ["Bearer b", ""]),
        session_key(None, "https", "example.com", 443, "/mcp", ["Bearer a", ""]),
    ]
    assert base not in others and len(set(others)) == len(others)
    assert "s1" not in base and "Bearer" not in base


def _random_event(rng: random.Random, n: int) -> bytes:
    """An event in one of the shapes servers send, and some they should not: the relay must read each right."""
    eid = rng.choice([str(n), str(n), str(rng.randrange(8)), "", "a\x00b", "\xe9t\xe9", None])
    raw_id = b"" if eid is None else eid.encode()
    if eid is not None and rng.random() < 0.05:
        raw_id = b"\xff" + raw_id  # not UTF-8
    sep = rng.choice([b": ", b":", b":  "])
    data = b"data: %d\n" % n
    shape = rng.randrange(6)
    if shape == 0:
        return data + b"\n"
    if shape == 1:
        return b"id" + sep + raw_id + b"\nevent: e\n" + data + b"\n"
    if shape == 2:
        return (b"id" + sep + raw_id + b"\r\n" + data + b"\r\n").replace(b"\n", b"\r\n").replace(b"\r\r", b"\r")
    if shape == 3:
        return b": comment\n" + (b"id" + sep + raw_id + b"\n" if eid is not None else b"") + data + b"\n"
    return (b"id" + sep + raw_id + b"\n" if eid is not None else b"") + data + b"\n"


@pytest.fixture(
    params=[
        "python",
        # Without the C part the relay reads ids in Python already: the case is skipped, not run twice.
        pytest.param("c", marks=pytest.mark.skipif(not COMPILED, reason="the C part is not built")),
    ]
)
def id_reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The relay's hot path reading ids in Python, and in C where the extension is built."""
    if request.param == "python":
        monkeypatch.setattr(_resume, "single_event_id", single_event_id_py)
    else:
        assert vars(_resume)["single_event_id"] is single_event_id is not single_event_id_py  # C, as the relay runs it


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.usefixtures("id_reader")
def test_hot_path_relays_and_records_as_the_general_path_does(seed: int) -> None:
    # One event per chunk takes the hot path where it can; the same stream in one chunk takes the general parser.
    # Both must send the same bytes and leave the same history.
    rng = random.Random(seed)
    events = [b"id: 0\ndata: first\n\n", *(_random_event(rng, n) for n in range(1, 400))]
    results: list[tuple[bytes, list[tuple[str | None, bytes | None]], int]] = []
    for chunks in (events, [b"".join(events)]):
        # (0: no window; 10,000: every id; a window in between holds "at least" its size, by path.)
        r = resumer(dedupe_window=rng.choice([0, 10_000]) if not results else results[0][2])
        relay = r.open(decide(r, "s", None))
        out = b"".join(relay.feed(c) for c in chunks) + relay.close()
        assert isinstance(r.store, MemoryHistory)
        history = [(e.id, e.raw) for e in r.store.events("s")]
        results.append((out, history, r.dedupe_window))
    assert results[0][:2] == results[1][:2]


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.usefixtures("id_reader")
def test_hot_path_drops_what_a_resuming_client_has_as_the_general_path_does(seed: int) -> None:
    # A client resumes from id 20 of a stream that holds 1..50; the upstream then sends old, held and new ids in
    # any order. One event per chunk (hot path) and all in one chunk (general parser) must agree.
    rng = random.Random(seed)
    upstream = [b"id: %d\ndata: %d\n\n" % (n, n) for n in (rng.randrange(1, 80) for _ in range(150))]
    window = rng.choice([0, 10_000])
    results = []
    for chunks in (upstream, [b"".join(upstream)]):
        r = resumer(dedupe_window=window)
        stream_of(r, decide(r, "s", None), [ev(n) for n in range(1, 51)])
        decision = decide(r, "s", "20")
        assert decision.resume_seq is not None
        relay = r.open(decision)
        out = b"".join(relay.feed(c) for c in chunks) + relay.close()
        assert isinstance(r.store, MemoryHistory)
        results.append((out, [(e.id, e.raw) for e in r.store.events("s")]))
    assert results[0] == results[1]
    assert b"id: 20\n" not in results[0][0] and b"id: 5\n" not in results[0][0]  # the client had those


def _batch_of_events(rng: random.Random, n: int) -> list[bytes]:
    """A run of events as an upstream that writes in batches sends them: of one plain kind, events sent before
    again (or held by the history of a resumed stream), or of any shape."""
    return run_of_events(rng, n, [*PLAIN, lambda k: ev(rng.randrange(1, 40)), lambda k: _random_event(rng, k)])


@pytest.mark.parametrize("seed", range(30))
def test_chunks_of_many_events_relay_and_record_as_the_parser_reads_them(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Chunks of several whole events are taken whole where they can (Relay._whole), cut around the block the
    # parser holds (cut_at_blocks); read by the parser, block by block, the same chunks must send the same bytes,
    # leave the same history and count the same duplicates, for a fresh stream and a resumed one.
    rng = random.Random(seed)
    events = [b"id: 0\ndata: first\n\n"]
    while len(events) < 300:
        events += _batch_of_events(rng, len(events))
    chunks, i = [], 0
    while i < len(events):  # mostly whole batches; now and then cut anywhere
        k = rng.randint(1, 24)
        chunks.append(b"".join(events[i : i + k]))
        i += k
    data = b"".join(chunks)
    if seed % 2:
        cuts = sorted(rng.sample(range(1, len(data)), 40))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    window = rng.choice([0, 100, 10_000])
    resumed = seed % 3 == 0
    results = []
    taken = {"whole": 0}
    real = plain_batch

    def counted(chunk: bytes, max_size: int) -> object:
        found = real(chunk, max_size)
        taken["whole"] += found is not None
        return found

    for reader in (counted, lambda chunk, max_size: None):
        monkeypatch.setattr(_resume, "plain_batch", reader)
        r = resumer(dedupe_window=window)
        if resumed:
            stream_of(r, decide(r, "s", None), [ev(n) for n in range(1, 31)])
        decision = decide(r, "s", "20" if resumed else None)
        relay = r.open(decision)
        out = b"".join(relay.feed(c) for c in chunks) + relay.close()
        assert isinstance(r.store, MemoryHistory)
        results.append((out, [(e.id, e.raw) for e in r.store.events("s")], relay.stats.duplicates))
    assert results[0] == results[1]
    assert taken["whole"] > 3  # (the case tests what it means to)


# -- generated schedules --------------------------------------------------------------------------------------------
# Generated schedules of disconnects, reconnects and upstream behaviours against the sans-I/O core.
#
# A simulated client reads a stream of numbered events through the Resumer and its relays. Generated: how the
# upstream answers a Last-Event-ID (resume after it, ignore it and start at 1, or overlap a few events), how its
# bytes are chunked, where the client's connection breaks, and whether the bytes in flight at that moment are
# lost. Invariant: the client gets every event at most once, in upstream order, and, once a connection runs to the
# end, all of them (the history here is large enough to hold every event).


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


# -- generated schedules past the proxy's bounds: many clients of one session, ids that name several events --------
# Several clients of one session, each with a schedule of its own, interleaved chunk by chunk (and with the addon's
# timer flush in between), against upstreams that repeat ids (second stamps; bytes that are not UTF-8 and decode
# alike), number every response from 1 with data of its own, or ignore Last-Event-ID while the history holds a few
# events only (and the ids behind it may be forgotten too). The invariant, for every client: each event at most
# once, in order, none skipped, and all of them by the end; or the client was told (a miss: the header, and the
# comment first in the stream) where the proxy's bounds make that impossible. A miss is allowed only then: the
# client's id names more than one event the proxy was sent, or the session saw more events than it remembers.


FORGOTTEN = b": sse-resume: earlier events of this session are no longer remembered"


@dataclass(frozen=True, slots=True)
class Connected:
    """In a client's log: a response began, with this outcome; ``warned``: it said first that the stream is
    longer than the proxy remembers (so what an upstream that starts over sends may come again)."""

    outcome: str
    warned: bool


@dataclass(frozen=True, slots=True)
class Upstream:
    """An upstream's events, and where its response starts for a given ``Last-Event-ID``."""

    ids: str
    """unique, stamp (the second it was sent: several events each), bad-utf8 (several events' ids read alike),
    bad-utf8-unique"""
    behaviour: str
    """resume (after the id), from (again from the first event with the id), ignore (from 1), overlap"""
    fresh: bool
    """Every response numbers from 1 with data of its own (so each is a stream of its own)."""
    total: int
    per_id: int
    """Events that share an id, for ``stamp`` and ``bad-utf8``."""
    overlap: int

    def raw_id(self, n: int) -> bytes:
        group = (n - 1) // self.per_id + 1
        if self.ids == "unique":
            return b"%d" % n
        if self.ids == "stamp":  # the second it was sent
            return b"%d" % (1_700_000_000 + group)
        if self.ids == "bad-utf8":  # \xff1, \xfe1, \xfd1...: not UTF-8, and all read as \ufffd1
            return bytes([0xFF - (n - 1) % self.per_id]) + b"%d" % group
        return b"\xff%d" % n  # not UTF-8, but each reads differently

    def id(self, n: int) -> str:
        return self.raw_id(n).decode("utf-8", "replace")

    def event(self, response: int, n: int) -> bytes:
        return b"id: %s\ndata: %d.%d\n\n" % (self.raw_id(n), response if self.fresh else 0, n)

    def start(self, forward_id: str | None) -> int:
        """The first event a response sends to a request with ``forward_id``."""
        if self.fresh or self.behaviour == "ignore" or not forward_id:
            return 1
        matches = [n for n in range(1, self.total + 1) if self.id(n) == forward_id]
        if not matches:
            return 1
        if self.behaviour == "resume":
            return matches[-1] + 1
        if self.behaviour == "from":  # again from the first event with that id (at-least-once)
            return matches[0]
        return max(1, matches[0] - self.overlap)


@dataclass
class SimClient:
    connections: list[tuple[list[int], int, bool]]
    log: list[tuple[int, int] | Connected] = field(default_factory=list)
    """(generation, n) of each event received, in order, after the outcome of the response it came in."""
    last_event_id: str = ""
    outcomes: list[str] = field(default_factory=list)

    def take(self, parser: SSEParser, data: bytes) -> None:
        for block in parser.feed(data):
            if block.data is not None:
                generation, n = block.data.split(".")
                self.log.append((int(generation), int(n)))
            elif block.raw.startswith(FORGOTTEN):  # told in the stream (the session forgot while it read)
                self.log.append(Connected("told", warned=True))
        self.last_event_id = parser.last_event_id


class Proxy:
    """One Resumer, and what its relays were sent (to judge whether a miss was the only possible answer)."""

    def __init__(self, upstream: Upstream, limits: HistoryLimits, inline: bool) -> None:
        self.upstream = upstream
        self.limits = limits
        self.inline = inline
        self.resumer = Resumer(MemoryHistory(limits), replay=limits.replay)
        self.sent: dict[str, set[bytes]] = {}  # the events sent to the proxy, by the id it reads
        self.events_sent = 0
        self.responses = itertools.count(1)

    def note_sent(self, events: list[int], response: int) -> None:
        for n in events:
            self.sent.setdefault(self.upstream.id(n), set()).add(self.upstream.event(response, n))
        self.events_sent += len(events)

    def miss_allowed(self, last_event_id: str) -> bool:
        """Whether the proxy's bounds leave no other answer than a miss for ``last_event_id``."""
        named = self.sent.get(last_event_id, set())
        return len(named) != 1 or self.events_sent > self.limits.remembered

    def decide(self, last_event_id: str) -> Decision:
        coroutine = self.resumer.decide("s", last_event_id or None, self.inline)
        try:  # a memory store answers without awaiting anything: no event loop needed
            coroutine.send(None)
        except StopIteration as done:
            decision: Decision = done.value
            return decision
        raise AssertionError("a memory store's lookup awaited")


def connect(proxy: Proxy, client: SimClient) -> Iterator[None]:
    """A client's connections, one step (a decision, a chunk) per iteration."""
    upstream = proxy.upstream
    for cuts, break_after, lose in [*client.connections, ([], 10**6, False)]:  # at last, one that runs to its end
        for _ in range(10):  # a replay response is read whole, then the client reconnects at once
            decision = proxy.decide(client.last_event_id)
            client.outcomes.append(decision.outcome)
            warned = FORGOTTEN in decision.prefix or FORGOTTEN in decision.body
            assert not warned or proxy.events_sent > proxy.limits.remembered, ("a warning without cause", client)
            client.log.append(Connected(decision.outcome, warned))
            parser = SSEParser()
            parser.last_event_id = client.last_event_id
            if decision.outcome == "miss":
                assert proxy.miss_allowed(client.last_event_id), ("a miss the bounds do not explain", client)
                assert decision.prefix.startswith(b": sse-resume: Last-Event-ID ")
            if not decision.body:
                break
            client.take(parser, decision.body)
            yield
        else:
            raise AssertionError("a client kept getting replays")
        response = next(proxy.responses)
        numbers = list(range(upstream.start(decision.forward_id), upstream.total + 1))
        ends = list(itertools.accumulate(len(upstream.event(response, n)) for n in numbers))
        data = b"".join(upstream.event(response, n) for n in numbers)
        relay = proxy.resumer.open(decision)
        fed = 0
        fed_out = False  # the relay handed something on
        for i, piece in enumerate(chunks_of(data, cuts) if data else []):
            before = bisect.bisect_right(ends, fed)
            fed += len(piece)
            out = relay.feed(piece)
            proxy.note_sent(numbers[before : bisect.bisect_right(ends, fed)], response)
            if out and not fed_out:
                assert out.startswith(decision.prefix)  # the comment of a miss (any prefix) comes first
                fed_out = True
            if i >= break_after:
                if not lose:
                    client.take(parser, out)
                break  # (the relay's events not recorded yet are, by the next decision)
            client.take(parser, out)
            yield
        else:
            client.take(parser, relay.close())
        yield


def assert_invariant(client: SimClient, upstream: Upstream) -> None:
    """Each event at most once, in order, none skipped, and all of them by the end (the last one came); or the
    client was told.

    Told: after a miss (the header, and the comment first in the stream) the client's position means nothing, so
    the first event may be any the upstream sends, and what it had before counts for nothing. A response that
    says first that the stream is longer than the proxy remembers may bring back what the proxy forgot: anything
    goes in it, and what the client had before counts for nothing after it.
    """
    seen: set[tuple[int, int]] = set()
    generations: set[int] = set()
    previous: tuple[int, int] | None = None
    told = lax = reached = False  # reached: the last event came
    for item in client.log:
        if isinstance(item, Connected):
            told = told or lax or item.outcome == "miss"
            lax = item.warned
            if told:
                seen.clear()
                generations.clear()
            continue
        generation, n = item
        previous_item, previous = previous, item
        reached = reached or n == upstream.total
        if lax:
            continue
        assert item not in seen, ("received twice", item, client)
        if told:
            told = False  # the first event after the client was told: whatever the upstream sends
        elif previous_item is None:
            assert n == 1, ("the first event skipped", item, client)
        elif generation == previous_item[0]:
            assert n == previous_item[1] + 1, ("not the next event", previous_item, item, client)
        else:  # another response's events: only a new upstream response, from its start, never from history
            new = generation not in generations
            assert upstream.fresh and new and n == 1, ("crossed streams", previous_item, item, client)
        seen.add(item)
        generations.add(generation)
    assert reached, ("not all events by the end", client)


Schedule = tuple[Upstream, HistoryLimits, bool, list[SimClient], list[int]]


@st.composite
def bounded_schedules(draw: st.DrawFn, remembered: tuple[int, ...] = (100_000,), max_clients: int = 4) -> Schedule:
    ids = draw(st.sampled_from(["unique", "stamp", "bad-utf8", "bad-utf8-unique"]))
    fresh = draw(st.booleans()) if ids == "unique" else False
    # An upstream that resumes after an id many events carry skips the rest of them (its own doing): not drawn.
    behaviours = ["resume", "from", "ignore", "overlap"] if ids in ("unique", "bad-utf8-unique") else ["from", "ignore"]
    upstream = Upstream(
        ids,
        draw(st.sampled_from(behaviours)),
        fresh,
        total=draw(st.integers(min_value=1, max_value=20)),
        per_id=draw(st.integers(min_value=2, max_value=4)),
        overlap=draw(st.integers(min_value=1, max_value=5)),
    )
    replay = draw(st.booleans())
    limits = HistoryLimits(
        max_events=draw(st.sampled_from([2, 3, 5, 8, 10_000])),
        max_remembered=draw(st.sampled_from(remembered)),
        replay=replay,
    )
    # Where each connection's chunks are cut and how the clients' steps interleave come from a seed (drawing them one
    # by one took most of the time); the rest is drawn, so a failure shrinks to the upstream, bounds and schedule.
    rng = random.Random(draw(st.integers(min_value=0, max_value=2**32)))
    connection = st.tuples(
        st.integers(min_value=0, max_value=12),  # break after this many chunks
        st.booleans(),  # the bytes relayed in the breaking chunk are lost with the connection
    )
    clients = [
        SimClient([([rng.randrange(2000) for _ in range(rng.randrange(7))], k, lose) for k, lose in connections])
        for connections in draw(st.lists(st.lists(connection, max_size=6), min_size=1, max_size=max_clients))
    ]
    order = [rng.randrange(len(clients) + 1) for _ in range(rng.randrange(80))]  # len(clients): the timer's flush
    return upstream, limits, draw(st.booleans()), clients, order


def run_clients(proxy: Proxy, clients: list[SimClient], order: list[int]) -> None:
    steps = [connect(proxy, client) for client in clients]
    done: set[int] = set()
    for k in itertools.chain(order, itertools.chain.from_iterable(itertools.repeat(range(len(clients)), 10_000))):
        if len(done) == len(clients):
            return
        if k == len(clients):
            proxy.resumer.flush()  # the addon's timer
        elif k not in done and next(steps[k], StopIteration) is StopIteration:
            done.add(k)
    raise AssertionError("the clients never finished")


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bounded_schedules())
def test_every_client_gets_each_event_once_in_order_or_is_told(schedule: Schedule) -> None:
    upstream, limits, inline, clients, order = schedule
    proxy = Proxy(upstream, limits, inline)
    run_clients(proxy, clients, order)
    for client in clients:
        assert_invariant(client, upstream)
    assert isinstance(proxy.resumer.store, MemoryHistory)
    proxy.resumer.store._check()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bounded_schedules(remembered=(6, 15), max_clients=1))
def test_past_the_ids_remembered_a_client_gets_each_event_once_in_order_or_is_told(schedule: Schedule) -> None:
    """As above, with a session remembering 6 or 15 events: what an upstream that starts over sends again that the
    proxy forgot reaches the client only after the proxy said so."""
    upstream, limits, inline, clients, order = schedule
    run_clients(Proxy(upstream, limits, inline), clients, order)
    assert_invariant(clients[0], upstream)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bounded_schedules(remembered=(6, 15)))
def test_past_the_ids_remembered_every_client_gets_each_event_once_in_order_or_is_told(schedule: Schedule) -> None:
    """As above, with several clients of the session. (An event forgotten and sent again is recorded anew, after
    events that follow it upstream: a client resuming from it is warned, and nothing is dropped by its position.)"""
    upstream, limits, inline, clients, order = schedule
    run_clients(Proxy(upstream, limits, inline), clients, order)
    for client in clients:
        assert_invariant(client, upstream)


def test_a_client_is_told_when_its_session_forgets_while_it_reads() -> None:
    """Found by the generated schedules: a client resumes, another stream of its session then pushes the events
    it had out of what the proxy remembers, and its upstream starts over. It is told before they come again."""
    resumer = Resumer(MemoryHistory(HistoryLimits(max_events=2, max_remembered=6)), dedupe_window=0)
    first = b"".join(b"id: %d\ndata: %d\n\n" % (n, n) for n in range(1, 5))
    relay = resumer.open(asyncio.run(resumer.decide("s", None)))
    assert relay.feed(first) == first
    resumer.flush()
    decision = asyncio.run(resumer.decide("s", "4"))
    assert decision.outcome == "up-to-date" and FORGOTTEN not in decision.prefix
    again = resumer.open(decision)
    other = resumer.open(asyncio.run(resumer.decide("s", None)))  # the session's other stream: 4 more events
    other.feed(b"".join(b"id: o%d\ndata: o\n\n" % n for n in range(4)))
    resumer.flush()  # 1 and 2 are forgotten now
    out = again.feed(first + b"id: 5\ndata: 5\n\n")  # an upstream that ignores Last-Event-ID
    assert out.startswith(FORGOTTEN)  # told first...
    assert out.endswith(b"\n\nid: 1\ndata: 1\n\nid: 2\ndata: 2\n\nid: 5\ndata: 5\n\n")  # ...then what may be new
    assert again.stats.duplicates == 2  # 3 and 4, still remembered at its position, are dropped


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
    resumed = b"".join(again.feed(c) for c in chunks) + again.close()  # a resumed relay on the same bytes
    assert relay.failed is None and again.failed is None
    # It drops only what the client had (each drop counted), and puts only the decision's prefix in front: after
    # the stream's BOM, if it has one, which goes first (or is dropped when the prefix went out before it came).
    prefix = decision.prefix
    if out.startswith(BOM) and prefix:
        assert resumed.startswith((BOM + prefix, prefix))
        resumed, out = resumed.removeprefix(BOM), out.removeprefix(BOM)
    if again.stats.duplicates == 0:
        assert resumed == prefix + out
    else:
        assert resumed.startswith(prefix) and len(resumed) < len(prefix) + len(out)


# -- bounded replays: parts, and the budget of replays in flight --------------------------------------------------


def big(n: int, size: int = 1000) -> bytes:
    return b"id: %d\ndata: %s\n\n" % (n, b"x" * size)


def filled(budget: _resume.ReplayBudget, events: int = 20) -> Resumer:
    r = Resumer(MemoryHistory(HistoryLimits()), budget=budget)
    stream_of(r, decide(r, "s", None), [big(n) for n in range(events + 1)])  # (0: where the clients resume))
    return r


def ids_of(body: bytes) -> list[str]:
    return [b.id for b in SSEParser().feed(body) + SSEParser().close() if b.id]


def test_a_replay_larger_than_its_bound_is_served_in_parts_each_event_once_in_order() -> None:
    budget = _resume.ReplayBudget(per_replay=5000, in_flight=1 << 30)
    r = filled(budget)
    got: list[str] = []
    last = "0"
    d = decide(r, "s", "0")
    for _ in range(20):  # a client that comes back with the newest id it got, as EventSource does
        if d.outcome != "hit":
            break
        assert d.charge is not None and len(d.body) <= 5000
        assert d.body.endswith(b"retry: 50\n\n")
        part = ids_of(d.body)
        got += part
        assert d.held_back == 20 - len(got)
        last = part[-1]
        d.charge.release()
        d = decide(r, "s", last)
    assert got == [str(n) for n in range(1, 21)]
    assert len(set(got)) == 20 and last == "20"
    # up to date at last, and the upstream's retry (none: the default) is restored after the short one
    assert (d.outcome, d.prefix, d.forward_id) == ("up-to-date", b"retry: 3000\n\n", "20")
    assert budget.held == 0 and budget.replays == 0


def test_a_part_says_how_many_follow() -> None:
    r = filled(_resume.ReplayBudget(per_replay=5000, in_flight=1 << 30))
    d = decide(r, "s", "0")
    assert d.body.startswith(b": sse-resume: served 4 events from history (a replay is bounded); 16 more in the next")
    assert len(d.replay) == 4


def test_a_part_holds_at_least_one_event_however_small_the_bound() -> None:
    r = filled(_resume.ReplayBudget(per_replay=1024, in_flight=1 << 30))
    d = decide(r, "s", "4")
    assert ids_of(d.body) == ["5"]


def test_a_part_ends_at_an_event_with_an_id() -> None:
    r = Resumer(MemoryHistory(HistoryLimits()), budget=_resume.ReplayBudget(per_replay=2500, in_flight=1 << 30))
    no_id = b"data: %s\n\n" % (b"y" * 1000)
    stream_of(r, decide(r, "s", None), [big(1), big(2), no_id, big(3), no_id, no_id, big(4)])
    d = decide(r, "s", "1")
    # 2, then an event without id fits, 3 does not: the part ends after 2 (the client resumes from 2)
    assert ids_of(d.body) == ["2"] and d.body.count(b"data: y") == 0
    d = decide(r, "s", "2")
    assert ids_of(d.body) == ["3"] and d.body.count(b"data: y") == 1


def test_replays_in_flight_are_bounded_and_served_smaller_when_the_budget_is_full() -> None:
    budget = _resume.ReplayBudget(per_replay=8000, in_flight=12000)
    r = filled(budget)
    first = decide(r, "s", "0")
    assert first.charge is not None and len(ids_of(first.body)) == 7  # ~1 KiB events, 8000 bytes a part
    second = decide(r, "s", "0")  # 12000 - ~7100 left
    assert 1 < len(ids_of(second.body)) < 7
    assert budget.held == len(first.body) + len(second.body) <= 12000
    third = decide(r, "s", "0")  # nothing left: one event, not refused
    assert ids_of(third.body) == ["1"] and third.outcome == "hit"
    assert budget.shortened == 2 and budget.replays == 3
    first.charge.release()
    first.charge.release()  # (once only)
    assert budget.held == len(second.body) + len(third.body)
    assert len(ids_of(decide(r, "s", "0").body)) > 1  # room again


def test_an_inline_part_forwards_from_its_last_event_and_says_so() -> None:
    budget = _resume.ReplayBudget(per_replay=5000, in_flight=1 << 30)
    r = filled(budget)
    d = decide(r, "s", "0", inline=True)
    assert (d.outcome, d.forward_id, d.held_back) == ("hit", "4", 16)
    assert d.prefix.startswith(b": sse-resume: served 4 events from history (a replay is bounded); the 16 after them")
    # the upstream resumes after 4 (it resends 5..20, then goes on): each event once, in order
    out = stream_of(r, d, [big(n) for n in range(5, 23)])
    assert ids_of(out) == [str(n) for n in range(1, 23)]


def test_an_inline_replay_is_released_once_the_proxy_asks_for_more() -> None:
    budget = _resume.ReplayBudget(per_replay=5000, in_flight=1 << 30)
    r = filled(budget)
    d = decide(r, "s", "0", inline=True)
    assert d.charge is not None and budget.held == len(d.prefix)
    relay = r.open(d, release_early=True)
    first = relay.pipe(big(21))
    assert isinstance(first, bytes) and first.startswith(d.prefix)
    assert budget.held == len(d.prefix)  # handed on, maybe not sent yet
    assert relay.pipe(big(22)) == big(22)  # mitmproxy reads on only once its writers drained: sent
    assert budget.held == 0 and not d.charge.held
    assert relay.pipe(big(23)) == big(23)  # and the hot path is back
    assert relay._hot


def test_an_inline_replay_without_early_release_stays_charged_for_its_caller() -> None:
    budget = _resume.ReplayBudget(per_replay=5000, in_flight=1 << 30)
    r = filled(budget)
    d = decide(r, "s", "0", inline=True)
    relay = r.open(d)
    relay.pipe(big(21))
    relay.pipe(big(22))
    relay.close()
    assert d.charge is not None and budget.held == len(d.prefix)
    d.charge.release()
    assert budget.held == 0


# -- the seams of one engine: ids that repeat, histories that end, streams read twice ----------------------------


def numbered(first: int, last: int, tag: bytes = b"") -> list[bytes]:
    return [b"id: %d\ndata: %d%s\n\n" % (n, n, tag) for n in range(first, last + 1)]


def ids_in(data: bytes) -> list[str]:
    return [block.id or "" for block in SSEParser().feed(data) if block.id is not None]


def limited(**limits: object) -> Resumer:
    return Resumer(MemoryHistory(HistoryLimits(**limits)))  # type: ignore[arg-type]


def test_an_upstream_that_starts_over_past_the_history_is_deduplicated() -> None:
    r = limited(max_events=10)
    stream_of(r, decide(r, "s", None), numbered(1, 20))
    d = decide(r, "s", "20")
    assert d.outcome == "up-to-date" and d.forward_id == "20"
    out = stream_of(r, d, numbered(1, 25))  # it ignores Last-Event-ID: 1..20 again, then new ones
    assert ids_in(out) == [str(n) for n in range(21, 26)]
    assert len(r.store.events("s")) == 10  # type: ignore[attr-defined]  # 1..10 were not recorded again


def test_a_gap_in_the_history_resumes_upstream_from_the_clients_id() -> None:
    r = limited(max_events=5, max_remembered=100)
    stream_of(r, decide(r, "s", None), numbered(1, 20))
    d = decide(r, "s", "3")  # 4..15 left the history: they cannot be replayed
    assert d.outcome == "behind" and d.forward_id == "3" and d.resume_seq is not None
    out = stream_of(r, d, numbered(1, 22))  # an upstream that starts over sends what the client has too
    assert ids_in(out) == [str(n) for n in range(4, 23)]
    out = stream_of(r, decide(r, "s", "3"), numbered(4, 22))  # one that resumes: the same, once
    assert ids_in(out) == [str(n) for n in range(4, 23)]


def test_an_id_forgotten_is_a_miss() -> None:
    r = limited(max_events=5, max_remembered=10)
    stream_of(r, decide(r, "s", None), numbered(1, 20))
    assert decide(r, "s", "3").outcome == "miss"


def test_an_id_two_responses_carry_is_a_miss_and_never_the_other_streams_events() -> None:
    r = limited()
    stream_of(r, decide(r, "s", None), numbered(1, 10, b" of A"))
    stream_of(r, decide(r, "s", None), numbered(1, 10, b" of B"))
    d = decide(r, "s", "5")
    assert d.outcome == "miss" and d.replay == () and d.forward_id == "5"
    assert "names 2 events" in d.note and d.prefix.startswith(b": sse-resume: Last-Event-ID names 2 events")


def test_ids_that_repeat_with_other_bytes_are_all_relayed() -> None:
    r = limited()
    stamped = [b"id: 1700000%03d\ndata: event %d\n\n" % (n // 10, n) for n in range(30)]  # ten a second
    assert stream_of(r, decide(r, "s", None), stamped) == b"".join(stamped)
    assert len(r.store.events("s")) == 30  # type: ignore[attr-defined]
    assert decide(r, "s", "1700000001").outcome == "miss"  # ten events carry it: it names none


def test_ids_that_are_not_utf8_are_told_apart_by_their_bytes() -> None:
    r = limited()
    events = [b"id: \xff1\ndata: x\n\n", b"id: \xfe1\ndata: x\n\n", b"id: \xfd1\ndata: x\n\n", ev(2)]
    assert stream_of(r, decide(r, "s", None), events) == b"".join(events)


def test_the_same_event_again_in_one_response_is_dropped() -> None:
    r = limited()
    out = stream_of(r, decide(r, "s", None), [ev(1), ev(2), ev(1), b"id: 1\ndata: other\n\n"])
    assert out == ev(1) + ev(2) + b"id: 1\ndata: other\n\n"


def test_clients_of_one_session_reading_one_stream_share_one_copy() -> None:
    r = limited()
    relays = [r.open(decide(r, "s", None)) for _ in range(4)]
    for n in range(1, 51):
        for relay in relays:
            assert relay.feed(ev(n)) == ev(n)
    r.flush()
    assert {relay.stream for relay in relays} == {relays[0].stream}
    assert len(r.store.events("s")) == 50  # type: ignore[attr-defined]
    d = decide(r, "s", "40")  # so an id names one event, and every client can resume from it
    assert d.outcome == "hit" and [e.id for e in d.replay] == [str(n) for n in range(41, 51)]


def test_a_reconfigured_resumer_still_restores_the_upstreams_retry() -> None:
    r = limited()
    stream_of(r, decide(r, "s", None), [b"retry: 7000\n\n", *numbered(1, 5)])
    assert decide(r, "s", "2").body.endswith(b"retry: 50\n\n")  # a replay's short retry
    r.reconfigure(dedupe_window=5, stale_policy="restart", replay_retry=40)
    d = decide(r, "s", "5")
    assert d.outcome == "up-to-date" and d.prefix == b"retry: 7000\n\n"


def test_a_kept_decision_replays_every_event_held_after_the_id() -> None:
    r = limited()
    stream_of(r, decide(r, "s", None), [ev(1), ev(2), b"data: no id\n\n"])
    d = asyncio.run(r.decide("s", "1", kept=True))
    assert d.outcome == "hit" and [e.id for e in d.replay] == ["2", None] and d.body == b""
    assert d.note == "served 2 events from history, then the kept stream"
    assert [e.id for e in decide(r, "s", "1").replay] == ["2"]  # (a client that reconnects gets no id-less tail)


def test_a_stream_longer_than_the_proxy_remembers_is_told_so() -> None:
    """Past sse_max_remembered_ids an upstream that starts over repeats what the proxy cannot recognise: the
    client is told, in a comment first, on every way a resume is served."""
    r = limited(max_events=2, max_remembered=6)
    stream_of(r, decide(r, "s", None), numbered(1, 7))
    warning = b": sse-resume: earlier events of this session are no longer remembered"
    up = decide(r, "s", "7")
    assert up.outcome == "up-to-date" and up.prefix.startswith(warning) and "no longer remembered" in up.note
    # 1 is forgotten, and is recorded anew after 7 when it comes again: positions no longer follow the upstream's
    # order, so nothing is dropped by position (2..7 come again too, after the warning), and none is lost.
    out = stream_of(r, up, numbered(1, 9))
    assert out.startswith(warning) and ids_in(out) == [str(n) for n in range(1, 10)]
    hit = decide(r, "s", "8")
    assert hit.outcome == "hit" and hit.body.startswith(b": sse-resume: served 1 event from history\n\n" + warning)
    assert decide(r, "s", "8", inline=True).prefix.startswith(warning)
    kept = asyncio.run(r.decide("s", "8", kept=True))
    assert "no longer remembered" in kept.note
    assert "no longer remembered" in _resume.describe(up, "'7'")
    fresh = limited(max_events=2, max_remembered=6)
    stream_of(fresh, decide(fresh, "s", None), numbered(1, 6))
    assert not decide(fresh, "s", "6").prefix  # all of it remembered: nothing to say


def test_priming_event_is_a_position_and_streams_stay_apart() -> None:
    # MCP's streams of one session: a POST's and the GET's, each opened by a priming event (an id, empty data).
    r = Resumer(MemoryHistory(HistoryLimits()))
    post = r.open(asyncio.run(r.decide("s", None)))
    post.feed(b"id: post-1\ndata:\n\n")  # the priming event of a POST stream (2025-11-25): an id, empty data
    post.feed(b'id: post-2\ndata: {"progress": 1}\n\n')
    get = r.open(asyncio.run(r.decide("s", None)))
    get.feed(b"id: get-1\ndata:\n\n")
    get.feed(b'id: get-2\ndata: {"note": 1}\n\n')
    after_priming = asyncio.run(r.decide("s", "post-1"))
    assert after_priming.outcome == "hit" and [e.id for e in after_priming.replay] == ["post-2"]
    assert asyncio.run(r.decide("s", "get-1")).replay[0].id == "get-2"
    primed_only = r.open(asyncio.run(r.decide("s", None)))
    primed_only.feed(b"id: post-9\ndata:\n\n")
    assert asyncio.run(r.decide("s", "post-9")).outcome == "up-to-date"

"""Keep mode: the feed of a kept stream and the backoff between upstream tries (sans-I/O)."""

from __future__ import annotations

import random
import re

import pytest
from batch_harness import PLAIN, run_of_events

from sse_resume_core import HistoryLimits, MemoryHistory, _keep, _parser
from sse_resume_core._keep import PROXY_ID_PREFIX, Backoff, Delivery, KeptFeed, is_proxy_id
from sse_resume_core._parser import MAX_RETRY
from sse_resume_core._resume import BATCH


def feed_of(**kw: object) -> tuple[MemoryHistory, KeptFeed]:
    store = MemoryHistory(HistoryLimits())
    stream = store.new_stream("s")
    feed = KeptFeed(store, "s", stream, **kw)  # type: ignore[arg-type]
    feed.connected()
    return store, feed


def delivered(feed: KeptFeed, *chunks: bytes) -> bytes:
    return b"".join(d.raw for chunk in chunks for d in feed.feed(chunk))


# -- backoff -------------------------------------------------------------------------------------------------------


def test_backoff_doubles_from_one_second_up_to_thirty_for_ten_tries() -> None:
    b = Backoff()
    assert [b.delay(n, rand=lambda: 0.5) for n in range(1, 11)] == [1, 2, 4, 8, 16, 30, 30, 30, 30, 30]
    assert b.delay(11) is None and b.delay(0) is None


def test_backoff_jitter_is_ten_percent_either_way() -> None:
    b = Backoff()
    assert b.delay(1, rand=lambda: 0.0) == pytest.approx(0.9)
    assert b.delay(1, rand=lambda: 1.0) == pytest.approx(1.1)
    assert all(0.9 * 4 <= (b.delay(3) or 0) <= 1.1 * 4 for _ in range(200))


def test_backoff_base_is_the_upstreams_retry() -> None:
    b = Backoff(tries=3)
    assert [b.delay(n, 200, rand=lambda: 0.5) for n in (1, 2, 3, 4)] == [0.2, 0.4, 0.8, None]


# -- the feed ------------------------------------------------------------------------------------------------------


def test_events_are_recorded_once_and_delivered_in_order() -> None:
    store, feed = feed_of()
    out = delivered(feed, b"id: 1\ndata: a\n\nid: 2\nda", b"ta: b\n\n: ping\n\n")
    assert out == b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n: ping\n\n"
    assert [e.id for e in store.events("s")] == ["1", "2"]  # the comment is delivered, not recorded
    assert feed.upstream_id == "2"


def test_events_resent_after_a_reconnect_are_dropped() -> None:
    store, feed = feed_of()
    delivered(feed, b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n")
    feed.ended()
    feed.connected()  # an upstream that ignores Last-Event-ID starts again from 1
    out = delivered(feed, b"id: 1\ndata: a\n\nid: 2\ndata: b\n\nid: 3\ndata: c\n\n")
    assert out == b"id: 3\ndata: c\n\n"
    assert [e.id for e in store.events("s")] == ["1", "2", "3"]


def test_when_the_session_forgets_while_the_feed_reads_the_clients_are_told_before_events_come_again() -> None:
    n = BATCH + 1100  # more than the feed's own window of recent events holds (BATCH, and up to 1,024 more)
    store = MemoryHistory(HistoryLimits(max_events=3, max_remembered=n + 2))
    feed = KeptFeed(store, "s", store.new_stream("s"))
    feed.connected()
    first = b"".join(b"id: %d\ndata: a\n\n" % k for k in range(1, n + 1))
    assert delivered(feed, first) == first
    other = store.new_stream("s")  # another stream of the session pushes 1 and 2 out of what it remembers
    store.record_many("s", other, ["x", "y", "z", "w"], [b"id: %s\ndata: o\n\n" % i.encode() for i in "xyzw"])
    assert store.forgotten("s") == 2
    feed.ended()
    feed.connected()  # an upstream that ignores Last-Event-ID: 1 and 2 again, which the proxy no longer knows
    out = delivered(feed, b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n" + b"id: %d\ndata: a\n\n" % n)
    assert out.startswith(b": sse-resume: earlier events of this session are no longer remembered")
    assert out.endswith(b"\n\nid: 1\ndata: a\n\nid: 2\ndata: b\n\n")  # told first; n, still known, dropped


def test_an_unfinished_block_at_a_break_is_never_delivered() -> None:
    store, feed = feed_of()
    assert delivered(feed, b"id: 1\ndata: a\n\nid: 2\ndata: b") == b"id: 1\ndata: a\n\n"
    feed.ended()
    assert [e.id for e in store.events("s")] == ["1"]  # nor recorded
    feed.connected()
    assert delivered(feed, b"\n\n") == b"\n\n"  # the held start is gone: this ends nothing of it
    assert delivered(feed, b"id: 2\ndata: b\n\n") == b"id: 2\ndata: b\n\n"  # resent whole: delivered once
    assert [(e.id, e.raw) for e in store.events("s")] == [("1", b"id: 1\ndata: a\n\n"), ("2", b"id: 2\ndata: b\n\n")]


def test_assigned_ids_are_the_proxys_unique_and_never_the_upstream_id() -> None:
    store, feed = feed_of(assign_ids=True)
    out = delivered(feed, b"data: a\n\ndata: b\n\nid: 7\ndata: c\n\n")
    ids = [e.id for e in store.events("s")]
    assert ids[2] == "7" and is_proxy_id(ids[0]) and is_proxy_id(ids[1]) and ids[0] != ids[1]
    assert ids[0] is not None and ids[0].startswith(f"{PROXY_ID_PREFIX}{feed.name}.")
    assert out.startswith(b"id: %s\ndata: a\n\n" % ids[0].encode())
    assert feed.upstream_id == "7" and out.count(b"id: ") == 3  # each event has one id line: two made, one its own
    delivered(feed, b"data: d\n\n")
    assert feed.upstream_id == "7"  # a proxy-made id is never what the upstream is asked to resume from


def test_without_assign_ids_events_keep_their_bytes() -> None:
    store, feed = feed_of()
    assert delivered(feed, b"data: a\n\n") == b"data: a\n\n"
    assert [e.id for e in store.events("s")] == [None]


def test_retry_and_id_reset_are_followed() -> None:
    _, feed = feed_of()
    delivered(feed, b"retry: 250\n\nid: 4\ndata: a\n\n")
    assert feed.retry == 250 and feed.upstream_id == "4"
    delivered(feed, b"id\ndata: b\n\n")  # an empty id: the upstream reset its ids
    assert feed.upstream_id is None


def test_oversize_events_pass_live_and_are_not_recorded() -> None:
    store, feed = feed_of(max_event_bytes=64)
    big = b"id: 9\ndata: " + b"x" * 200 + b"\n\n"
    assert delivered(feed, big, b"id: 10\ndata: ok\n\n") == big + b"id: 10\ndata: ok\n\n"
    assert [e.id for e in store.events("s")] == ["10"]


def test_a_huge_retry_is_followed_clamped_and_nothing_is_lost() -> None:
    store, feed = feed_of()
    chunks = [
        b"id: 1\ndata: a\n\nid: 2\nevent: x\ndata: b\n",
        b"retry: " + b"9" * 5000 + b"\n\n",
        b"id: 3\ndata: c\n\n",
    ]
    assert delivered(feed, *chunks) == b"".join(chunks)
    assert feed.retry == MAX_RETRY and [e.id for e in store.events("s")] == ["1", "2", "3"]
    assert Backoff().delay(1, feed.retry, rand=lambda: 0.5) == 30  # the cap, as for any long retry


def test_the_retry_of_an_unfinished_final_block_counts() -> None:
    store, feed = feed_of()
    assert delivered(feed, b"retry: 60000\n\nid: 1\ndata: a\n\nretry: 5\ndata: never") == (
        b"retry: 60000\n\nid: 1\ndata: a\n\n"
    )
    assert feed.retry == 60000
    assert feed.ended() == []  # the block is discarded, its retry line applied
    assert feed.retry == 5 and feed.upstream_id == "1" and [e.id for e in store.events("s")] == ["1"]


def test_the_block_a_final_cr_ends_is_delivered_at_the_end() -> None:
    store, feed = feed_of()
    assert delivered(feed, b"id: 1\rdata: a\r\r") == b""  # (a CR at the end: an LF may follow)
    assert [d.raw for d in feed.ended()] == [b"id: 1\rdata: a\r\r"]
    assert [e.id for e in store.events("s")] == ["1"]


def test_a_bom_never_reaches_the_clients_nor_the_history() -> None:
    store, feed = feed_of()
    bom = b"\xef\xbb\xbf"
    assert delivered(feed, bom + b"id: 1\nevent: update\ndata: a\n\n") == b"id: 1\nevent: update\ndata: a\n\n"
    feed.ended()
    feed.connected()  # the next upstream connection starts with a BOM again, in the middle of the clients' stream
    assert (
        delivered(feed, b"\xef", b"\xbb\xbfid: 2\nevent: update\ndata: b\n\n") == b"id: 2\nevent: update\ndata: b\n\n"
    )
    assert [e.raw for e in store.events("s")] == [
        b"id: 1\nevent: update\ndata: a\n\n",
        b"id: 2\nevent: update\ndata: b\n\n",
    ]


# -- oversize events: where they end -------------------------------------------------------------------------------


def _oversize_runs(deliveries: list[Delivery]) -> list[bytes]:
    """The oversize events in ``deliveries``, each rebuilt from its pieces (checking that ``more`` is set on
    every piece but the last of each event)."""
    events: list[bytes] = []
    current: list[bytes] | None = None
    for d in deliveries:
        if not d.oversize:
            assert current is None, "a block inside an unfinished oversize event"
            continue
        current = (current or []) + [d.raw]
        if not d.more:
            events.append(b"".join(current))
            current = None
    assert current is None
    return events


BIG = b"id: 5\ndata: " + b"y" * 300 + b"\ndata: " + b"z" * 300 + b"\n\n"


@pytest.mark.parametrize("step", [len(BIG) + 40, 64, 7, 1])
@pytest.mark.parametrize("ends", [b"\n\n", b"\r\n\r\n", b"\r\r"])
def test_an_oversize_event_says_where_it_ends_however_it_is_cut(step: int, ends: bytes) -> None:
    big = BIG[:-2] + ends
    stream = b"id: 4\ndata: a\n\n" + big + b"id: 6\ndata: b\n\n"
    store, feed = feed_of(max_event_bytes=64)
    out = [d for start in range(0, len(stream), step) for d in feed.feed(stream[start : start + step])]
    assert b"".join(d.raw for d in out) == stream  # every byte, once, in order
    assert _oversize_runs(out) == [big]
    assert not feed.open_oversize
    assert [e.id for e in store.events("s")] == ["4", "6"]


def test_an_oversize_event_is_open_until_its_end_and_a_new_connection_closes_it() -> None:
    _, feed = feed_of(max_event_bytes=64)
    (piece,) = feed.feed(BIG[:200])
    assert piece.oversize and piece.more and feed.open_oversize
    (piece,) = feed.feed(BIG[200:400])
    assert piece.more
    feed.ended()  # the upstream broke in the middle of it
    feed.connected()
    assert not feed.open_oversize
    assert [d.oversize for d in feed.feed(b"id: 9\ndata: c\n\n")] == [False]


def test_an_upstream_that_starts_over_past_the_history_is_recognised() -> None:
    store = MemoryHistory(HistoryLimits(max_events=10))
    feed = KeptFeed(store, "s", store.new_stream("s"))
    events = [b"id: %d\ndata: %d\n\n" % (n, n) for n in range(1, 31)]
    feed.connected()
    assert delivered(feed, *events[:20]) == b"".join(events[:20])
    feed.ended()
    feed.connected()  # it ignores Last-Event-ID: 1..20 again (1..10 long out of the history), then new ones
    assert delivered(feed, b"".join(events[:25])) == b"".join(events[20:25])
    assert len(store.events("s")) == 10


def test_repeated_ids_with_other_bytes_are_other_events_in_keep_mode_too() -> None:
    _, feed = feed_of()
    stamped = [b"id: 17\ndata: %d\n\n" % n for n in range(5)]
    assert delivered(feed, b"".join(stamped), *stamped) == b"".join(stamped)  # (the second time: recognised)


def test_feeds_of_one_session_reading_the_same_stream_share_one_copy() -> None:
    """Two fresh requests of one session, each on a connection of its own to an upstream that sends the same
    stream: each feed's clients get every event, and the history holds the stream once."""
    store = MemoryHistory(HistoryLimits())
    first, second = KeptFeed(store, "s"), KeptFeed(store, "s")
    first.connected()
    second.connected()
    events = [b"id: %d\ndata: %d\n\n" % (n, n) for n in range(1, 7)]
    assert delivered(first, *events[:4]) == b"".join(events[:4])
    assert delivered(second, *events[:2]) == b"".join(events[:2])  # held already: delivered, not recorded
    assert second.stream == first.stream is not None
    assert delivered(second, *events[2:]) == b"".join(events[2:])  # and then past the first feed
    assert delivered(first, *events[2:]) == b"".join(events[4:])  # its clients have 3 and 4
    assert [e.id for e in store.events("s")] == ["1", "2", "3", "4", "5", "6"]
    assert {e.stream for e in store.events("s")} == {first.stream}


def test_a_held_event_is_delivered_with_its_position_a_new_one_without() -> None:
    store = MemoryHistory(HistoryLimits())
    first, second = KeptFeed(store, "s"), KeptFeed(store, "s")
    first.connected()
    second.connected()
    delivered(first, b"id: 1\ndata: a\n\n")
    delivered(second, b"id: 1\ndata: a\n\n")  # binds the second feed to the first's stream
    assert second.feed(b"id: 1\ndata: a\n\n") == []  # its clients have it
    [new] = second.feed(b"id: 2\ndata: b\n\n")
    assert new.seq == -1 and new.recorded
    [again] = first.feed(b"id: 2\ndata: b\n\n")
    assert again.seq == store.position("s", first.stream or "", "2", b"id: 2\ndata: b\n\n") == second.position


def test_a_feed_behind_the_history_drops_what_its_clients_have_and_delivers_the_rest_once() -> None:
    """A resume that is behind: the client has its stream up to 4, events 5.. left the history's payloads but
    are remembered. The upstream starts over at 1: 1..4 are dropped, 5..12 delivered and not recorded again,
    then the new ones recorded."""
    store = MemoryHistory(HistoryLimits(max_events=3))
    stream = store.new_stream("s")
    events = [b"id: %d\ndata: %d\n\n" % (n, n) for n in range(1, 16)]
    for n, raw in enumerate(events[:12], 1):
        store.record("s", stream, str(n), raw)
    four = store.position("s", stream, "4", events[3])
    assert four is not None and store.events("s")[0].id == "10"  # (payloads held: 10..12 only)
    feed = KeptFeed(store, "s", stream, position=four)
    feed.connected()
    assert delivered(feed, *events) == b"".join(events[4:])
    assert [e.id for e in store.events("s")] == ["13", "14", "15"]
    assert store.snapshot().stored == 15


def test_a_feed_behind_another_on_its_stream_loses_nothing_to_an_event_of_its_own() -> None:
    """The second feed's upstream sends an event the first's did not (D) between two they share: recorded after
    the first feed's events, it does not move the second feed's clients past those they have not had."""
    store = MemoryHistory(HistoryLimits())
    first, second = KeptFeed(store, "s"), KeptFeed(store, "s")
    first.connected()
    second.connected()
    a1, a2, a3, d = (b"id: %s\ndata: %s\n\n" % (n, n) for n in (b"1", b"2", b"3", b"D"))
    delivered(first, a1, a2, a3)
    assert delivered(second, a1) == a1
    assert delivered(second, d) == d
    assert delivered(second, a2) == a2 and delivered(second, a3) == a3
    assert [e.id for e in store.events("s")] == ["1", "2", "3", "D"]


def test_a_feed_that_goes_by_no_position_drops_only_what_a_batch_repeats() -> None:
    """In a session that has forgotten events positions do not follow the upstream's order: such a feed passes on
    what the history holds (the client was told), and records what is new, once."""
    store = MemoryHistory(HistoryLimits())
    stream = store.new_stream("s")
    events = [b"id: %d\ndata: %d\n\n" % (n, n) for n in range(1, 5)]
    for n, raw in enumerate(events[:3], 1):
        store.record("s", stream, str(n), raw)
    feed = KeptFeed(store, "s", stream, by_position=False)
    feed.connected()
    assert delivered(feed, b"".join(events + events[3:])) == b"".join(events)  # (4 twice in one batch: once)
    assert [e.id for e in store.events("s")] == ["1", "2", "3", "4"]


# -- whole events at once ---------------------------------------------------------------------------------------


def _upstream_run(rng: random.Random, n: int) -> list[bytes]:
    """Events as an upstream that writes in batches sends them: a run of one plain kind, of ids of the proxy's,
    of events sent before again, or of any shape (comments, retry, an id reset, an id-only block)."""
    odd = [b": ping\n\n", b"retry: 50\nid: %d\ndata: r\n\n", b"id\ndata: reset\n\n", b"id: %d\n\n"]

    def again(k: int) -> bytes:
        old = rng.randrange(1, max(2, n))
        return b"id: %d\ndata: %d\n\n" % (old, old)

    def proxy(k: int) -> bytes:
        return b"id: %s%d\ndata: p\n\n" % (PROXY_ID_PREFIX.encode(), k)

    def any_shape(k: int) -> bytes:
        shape = rng.choice(odd)
        return shape % k if b"%d" in shape else shape

    return run_of_events(rng, n, [*PLAIN, again, proxy, any_shape])


@pytest.mark.parametrize("seed", range(40))
def test_whole_events_are_fed_as_the_parser_reads_them(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of many events are taken whole where they can be (KeptFeed._whole); read by the parser, block by
    block, the same chunks must deliver the same bytes and counts, and leave the same history, upstream id and
    position: across an upstream that starts over, with a second feed on the same stream, by position or not,
    with ids assigned or not."""
    rng = random.Random(seed)
    events: list[bytes] = []
    while len(events) < 400:
        events += _upstream_run(rng, len(events) + 1)
    data = b"".join(events)
    cuts = sorted(rng.sample(range(1, len(data)), 30)) if seed % 2 else []
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)] if cuts else []
    if not cuts:  # whole runs of events, a chunk each
        i = 0
        while i < len(events):
            k = rng.randint(1, 24)
            chunks.append(b"".join(events[i : i + k]))
            i += k
    by_position = seed % 3 != 0
    assign_ids = seed % 4 == 1
    restart = chunks[: rng.randrange(1, len(chunks))]  # an upstream that ignores Last-Event-ID and starts over
    results: list[tuple[list[object], list[tuple[bytes, bytes, bool]]]] = []
    taken = {"whole": 0}
    real = _parser.plain_batch

    def counted(chunk: bytes, max_size: int) -> object:
        found = real(chunk, max_size)
        taken["whole"] += found is not None
        return found

    # (the ids the proxy assigns differ from one run to the next by their numbers only)
    assigned = re.compile(re.escape(PROXY_ID_PREFIX.encode()) + rb"k\d+\.\d+")

    def same(raw: bytes) -> bytes:
        return assigned.sub(b"*", raw)

    for reader in (counted, lambda chunk, max_size: None):
        monkeypatch.setattr(_keep, "plain_batch", reader)
        store = MemoryHistory(HistoryLimits())
        first, second = (KeptFeed(store, "s", by_position=by_position, assign_ids=assign_ids) for _ in range(2))
        said: list[object] = []
        for feed, stream in ((first, chunks), (first, restart), (second, chunks[: len(chunks) // 2])):
            feed.connected()
            got = [d for chunk in stream for d in feed.feed(chunk)] + feed.ended()
            said += [
                same(b"".join(d.raw for d in got)),
                sum(d.events for d in got if d.recorded),
                [(same(d.raw), d.seq) for d in got if d.seq >= 0],
                feed.upstream_id,
                feed.position,
                feed.stats.events,
            ]
        history = [
            (same((e.id or "").encode()), same(e.raw or b""), e.stream == first.stream) for e in store.events("s")
        ]
        results.append((said, history))
    assert results[0] == results[1]
    assert taken["whole"] > 3  # (the case tests what it means to)

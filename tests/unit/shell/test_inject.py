"""The injector of fault injection (addon/sse_resume_shell/_inject.py), sans I/O: bytes and a clock in, bytes
and faults out; every case whole, a byte at a time, and split at random points."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest

from fault_harness import EVENTS
from sse_resume_shell import Fault, Injector

STREAM = b": hello\n\n" + b"".join(EVENTS[:6]) + b"retry: 100\n\n" + b"".join(EVENTS[6:])


def pieces(data: bytes, how: str, seed: int = 0) -> list[bytes]:
    """``data`` whole, a byte at a time, or split at random points."""
    if how == "whole":
        return [data]
    if how == "bytes":
        return [data[i : i + 1] for i in range(len(data))]
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), 15))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def run(injector: Injector, chunks: Iterable[bytes], now: float = 0.0) -> tuple[bytes, list[Fault]]:
    out: list[bytes] = []
    faults: list[Fault] = []
    for chunk in chunks:
        data, made = injector.feed(chunk, now)
        out.append(data)
        faults += made
    return b"".join(out), faults


SPLITS = ["whole", "bytes", "random"]


# -- the injector ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", SPLITS)
def test_a_cut_sends_exactly_up_to_the_end_of_the_nth_event_then_nothing(how: str) -> None:
    injector = Injector(cut_after=5)
    out, faults = run(injector, pieces(STREAM, how))
    assert out == b": hello\n\n" + b"".join(EVENTS[:5])  # the comment is no event; the 5th event whole
    assert faults == [Fault("cut", 5, "5", "sse_fault_cut_after=5")]
    assert injector.done and injector.feed(b"data: more\n\n", 1.0) == (b"", [])


@pytest.mark.parametrize("how", SPLITS)
def test_every_nth_event_is_sent_twice_right_after_itself(how: str) -> None:
    injector = Injector(repeat_after=4)
    out, faults = run(injector, pieces(STREAM, how))
    expected = STREAM.replace(EVENTS[3], EVENTS[3] * 2).replace(EVENTS[7], EVENTS[7] * 2)
    expected = expected.replace(EVENTS[11], EVENTS[11] * 2)
    assert out == expected
    assert [(f.kind, f.events, f.last_event_id) for f in faults] == [
        ("repeat", 4, "4"),
        ("repeat", 8, "8"),
        ("repeat", 12, "12"),
    ]
    assert injector.repeats == 3 and injector.last_repeated == "12"


def test_crlf_events_and_a_byte_order_mark_are_counted_and_repeated_byte_for_byte() -> None:
    events = [b"id: a%d\r\nevent: message\r\ndata: x\r\n\r\n" % n for n in range(4)]
    stream = b"\xef\xbb\xbf" + b"".join(events)
    out, _ = run(Injector(repeat_after=2), pieces(stream, "bytes"))
    assert out == b"\xef\xbb\xbf" + events[0] + events[1] * 2 + events[2] + events[3] * 2


def test_blocks_without_data_are_not_events() -> None:
    stream = b"id: 1\n\n: comment\n\nretry: 5\n\n" + EVENTS[0] + b"id: 9\n\n" + EVENTS[1]
    out, faults = run(Injector(cut_after=2), pieces(stream, "bytes"))
    assert out == stream and faults[0].events == 2 and faults[0].last_event_id == "2"


def test_an_event_over_the_parser_bound_passes_uncounted() -> None:
    big = b"id: big\ndata: " + b"x" * 200 + b"\n\n"
    stream = EVENTS[0] + big + EVENTS[1]
    out, faults = run(Injector(cut_after=2, max_event_bytes=64), pieces(stream, "random"))
    assert out == stream and [f.last_event_id for f in faults] == ["2"]


@pytest.mark.parametrize("how", SPLITS)
def test_a_stall_holds_what_follows_the_nth_event_until_its_time_is_up(how: str) -> None:
    injector = Injector(stall_after=3, stall_for=2.0)
    first = b"".join(EVENTS[:6])
    out, faults = run(injector, pieces(first, how), now=10.0)
    assert out == b"".join(EVENTS[:3])  # held from the end of event 3 on
    assert faults == [Fault("stall", 3, "3", "sse_fault_stall_after=3")] and injector.stalling
    assert injector.feed(EVENTS[6], 11.9) == (b"", [])  # still held
    out, faults = injector.feed(EVENTS[7], 12.0)  # time is up: everything held goes, then this chunk
    assert out == b"".join(EVENTS[3:8]) and faults == []
    assert not injector.stalling and injector.stalled == pytest.approx(2.0) and injector.stalls == 1


def test_a_stall_starts_again_at_the_next_nth_event_sent_after_it() -> None:
    injector = Injector(stall_after=2, stall_for=1.0)
    out, _ = run(injector, [EVENTS[0], EVENTS[1], EVENTS[2], EVENTS[3]], now=0.0)
    assert out == b"".join(EVENTS[:2])  # events 3 and 4 held; event 4 falls in the stall and starts none
    out, faults = injector.feed(EVENTS[4] + EVENTS[5] + EVENTS[6], 1.0)
    assert out == b"".join(EVENTS[2:6]) and [f.events for f in faults] == [6]  # released, then stalled at 6
    assert injector.stalls == 2


def test_a_stall_ends_early_at_its_bound_and_at_the_streams_end() -> None:
    injector = Injector(stall_after=1, stall_for=60.0, max_held=4 * len(EVENTS[1]))
    out, _ = run(injector, EVENTS[:5])
    assert out == EVENTS[0] and injector.cut_short == 0  # events 2 to 5 held: at the bound, not past it
    out, _ = run(injector, [EVENTS[5]])
    assert out == b"".join(EVENTS[1:6]) and injector.cut_short == 1  # past it: the stall ends early
    injector = Injector(stall_after=1, stall_for=60.0)
    out, _ = run(injector, EVENTS[:3])
    assert out == EVENTS[0] and injector.finish(5.0) == EVENTS[1] + EVENTS[2] and injector.stalled == 5.0


def test_a_cut_during_a_stall_drops_what_the_stall_held() -> None:
    injector = Injector(stall_after=1, stall_for=60.0, cut_after=3)
    out, faults = run(injector, EVENTS[:5])
    assert out == EVENTS[0] and [f.kind for f in faults] == ["stall", "cut"]
    assert injector.finish(1.0) == b"" and injector.take_held() == b""


def test_repeat_and_cut_on_the_same_event_repeat_it_then_cut() -> None:
    out, faults = run(Injector(repeat_after=2, cut_after=2), [b"".join(EVENTS[:4])])
    assert out == EVENTS[0] + EVENTS[1] * 2 and [f.kind for f in faults] == ["repeat", "cut"]

"""The event-stream parser, one test per rule of the WHATWG "Interpreting an event stream" section.

Every case is fed whole, one byte at a time, and split at random points; all three must agree. Property tests
check that any split of any stream gives what feeding it whole gives, and that no input makes the parser raise.
"""

from __future__ import annotations

import os
import random
import re
import sys
from collections.abc import Callable
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sse_resume_core
from sse_resume_core import Block, BlockKind, SSEParser, _parser, parse
from sse_resume_core._parser import (
    COMPILED,
    DEFAULT_MAX_SIZE,
    MAX_RETRY,
    cut_at_blocks,
    plain_batch,
    single_event_id,
    single_event_id_py,
    whole_events,
    whole_events_py,
)

EVENT, EMPTY, OVERSIZE, UNFINISHED = BlockKind.EVENT, BlockKind.EMPTY, BlockKind.OVERSIZE, BlockKind.UNFINISHED
BOM = BlockKind.BOM
Summary = tuple[BlockKind, str | None, str, str | None, int | None, str]

CASES: list[bytes] = []  # every stream a rule test feeds, replayed by the split properties below


def feed_in(chunks: list[bytes], max_size: int = 1024 * 1024) -> list[Block]:
    parser = SSEParser(max_size)
    out: list[Block] = []
    for chunk in chunks:
        out += parser.feed(chunk)
    return out + parser.close()


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def normalise(blocks: list[Block]) -> list[Block]:
    """Merge consecutive OVERSIZE pieces: how an oversize block is cut into pieces depends on the chunking."""
    out: list[Block] = []
    for block in blocks:
        if block.kind is OVERSIZE and out and out[-1].kind is OVERSIZE and not out[-1].raw.endswith(b"\n\n"):
            out[-1] = Block(out[-1].raw + block.raw, OVERSIZE, last_event_id=block.last_event_id)
        else:
            out.append(block)
    return out


def all_ways(data: bytes, max_size: int = 1024 * 1024) -> list[Block]:
    """Feed ``data`` whole, byte by byte and at random points; check they agree and return the result."""
    CASES.append(data)
    whole = feed_in([data], max_size)
    assert b"".join(b.raw for b in whole) == data
    bytewise = feed_in([data[i : i + 1] for i in range(len(data))], max_size)
    assert normalise(bytewise) == normalise(whole)
    rng = random.Random(data)
    for _ in range(20):
        cuts = [rng.randrange(len(data) + 1) for _ in range(rng.randrange(1, 6))]
        assert normalise(feed_in(split_at(data, cuts), max_size)) == normalise(whole)
    return whole


def summary(data: bytes, max_size: int = 1024 * 1024) -> list[Summary]:
    return [(b.kind, b.id, b.type, b.data, b.retry, b.last_event_id) for b in all_ways(data, max_size)]


def events(data: bytes) -> list[tuple[str | None, str, str]]:
    """(last event id, type, data) of each dispatched event: what an EventSource would fire."""
    return [(b.last_event_id, b.type, b.data) for b in all_ways(data) if b.data is not None]


# -- Encoding ---------------------------------------------------------------------------------------------------


def test_bom_stripped_once() -> None:
    assert events(b"\xef\xbb\xbfdata: a\n\n") == [("", "message", "a")]


def test_second_bom_not_stripped() -> None:
    # The second BOM becomes part of the first field name: "\ufeffdata" is an unknown field.
    assert events(b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\ndata: b\n\n") == [("", "message", "b")]


def test_bom_only_at_stream_start() -> None:
    assert events(b"data: a\n\n\xef\xbb\xbfdata: b\n\n") == [("", "message", "a")]


def test_bom_handed_on_alone_before_the_first_block() -> None:
    # Its own piece, so a consumer can keep it first or drop it, and never stores it with the first event.
    blocks = all_ways(b"\xef\xbb\xbfid: 1\ndata: a\n\n")
    assert [(b.kind, b.raw) for b in blocks] == [(BOM, b"\xef\xbb\xbf"), (EVENT, b"id: 1\ndata: a\n\n")]
    assert blocks[1].id == "1"


def test_bom_handed_on_as_soon_as_it_is_whole() -> None:
    parser = SSEParser()
    assert parser.feed(b"\xef\xbb") == []  # (maybe a BOM: held)
    assert [(b.kind, b.raw) for b in parser.feed(b"\xbfdata: a")] == [(BOM, b"\xef\xbb\xbf")]
    assert parser.held() == b"data: a"
    assert [(b.kind, b.raw) for b in parser.close()] == [(UNFINISHED, b"data: a")]


def test_start_of_a_bom_at_the_end_is_an_unfinished_block() -> None:
    assert [(b.kind, b.raw) for b in all_ways(b"\xef\xbb")] == [(UNFINISHED, b"\xef\xbb")]
    assert events(b"\xef\xbbdata: a\n\n") == []  # "\xef\xbbdata" (replaced) is an unknown field


def test_invalid_utf8_replaced() -> None:
    assert events(b"data: a\xffb\xc3\n\n") == [("", "message", "a\ufffdb\ufffd")]


def test_utf8_multibyte_data() -> None:
    assert events("data: héllo ✓\n\n".encode()) == [("", "message", "héllo ✓")]


# -- Line ends --------------------------------------------------------------------------------------------------


def test_lf_line_ends() -> None:
    assert events(b"data: a\ndata: b\n\n") == [("", "message", "a\nb")]


def test_crlf_line_ends() -> None:
    assert events(b"data: a\r\ndata: b\r\n\r\n") == [("", "message", "a\nb")]


def test_cr_line_ends() -> None:
    assert events(b"data: a\rdata: b\r\r") == [("", "message", "a\nb")]


def test_mixed_line_ends() -> None:
    assert events(b"data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\r") == [
        ("", "message", "a\nb\nc"),
        ("", "message", "d"),
    ]


def test_crlf_across_chunks_is_one_line_end() -> None:
    # CR ends one chunk, LF starts the next: one line end, so "b" belongs to the same event.
    blocks = feed_in([b"data: a\r", b"\ndata: b\r\n\r\n"])
    assert [b.data for b in blocks] == ["a\nb"]


def test_cr_at_end_of_chunk_then_other_byte() -> None:
    blocks = feed_in([b"data: a\r", b"\r", b"data: b\n\n"])
    assert [b.data for b in blocks] == ["a", "b"]


def test_trailing_cr_at_end_of_input_ends_line() -> None:
    assert [b.data for b in parse(b"data: a\r\r")] == ["a"]


def test_extra_blank_lines_dispatch_nothing() -> None:
    assert events(b"\n\ndata: a\n\n\n\n\ndata: b\n\n") == [("", "message", "a"), ("", "message", "b")]


# -- Fields -----------------------------------------------------------------------------------------------------


def test_blank_line_dispatches() -> None:
    assert events(b"data: a\n\ndata: b\n") == [("", "message", "a")]


def test_comment_line_ignored() -> None:
    assert summary(b": keep-alive\n\n") == [(EMPTY, None, "", None, None, "")]
    assert events(b":x\ndata: a\n: y\n\n") == [("", "message", "a")]


def test_one_leading_space_removed() -> None:
    assert events(b"data:  two\n\ndata:none\n\n") == [("", "message", " two"), ("", "message", "none")]


def test_value_after_first_colon_only() -> None:
    assert events(b"data: a: b:c\n\n") == [("", "message", "a: b:c")]


def test_field_without_colon_has_empty_value() -> None:
    assert events(b"data\n\n") == [("", "message", "")]


def test_bare_data_line_appends_empty_line() -> None:
    assert events(b"data: a\ndata\ndata: b\n\n") == [("", "message", "a\n\nb")]


def test_field_names_case_sensitive() -> None:
    assert events(b"Data: a\nDATA: b\n\ndata: c\n\n") == [("", "message", "c")]


def test_unknown_field_ignored() -> None:
    assert events(b"foo: bar\ndata: a\n\n") == [("", "message", "a")]


def test_event_type() -> None:
    assert events(b"event: update\ndata: a\n\n") == [("", "update", "a")]


def test_empty_event_type_is_message() -> None:
    assert events(b"event:\ndata: a\n\n") == [("", "message", "a")]


def test_event_type_reset_after_dispatch() -> None:
    assert events(b"event: x\ndata: a\n\ndata: b\n\n") == [("", "x", "a"), ("", "message", "b")]


def test_event_type_reset_by_block_without_data() -> None:
    assert events(b"event: x\n\ndata: b\n\n") == [("", "message", "b")]


def test_multiline_data_joined_trailing_newline_removed() -> None:
    assert events(b"data: a\ndata: b\ndata:\n\n") == [("", "message", "a\nb\n")]


def test_empty_data_dispatched() -> None:
    assert summary(b"data:\n\n") == [(EVENT, None, "message", "", None, "")]


def test_nul_allowed_in_data() -> None:
    assert events(b"data: a\x00b\n\n") == [("", "message", "a\x00b")]


def test_field_order_does_not_matter() -> None:
    assert summary(b"data: a\nid: 7\nevent: e\n\n") == [(EVENT, "7", "e", "a", None, "7")]


# -- id ---------------------------------------------------------------------------------------------------------


def test_id_sets_last_event_id() -> None:
    assert summary(b"id: 1\ndata: a\n\n") == [(EVENT, "1", "message", "a", None, "1")]


def test_last_event_id_persists_across_events() -> None:
    assert events(b"id: 1\ndata: a\n\ndata: b\n\n") == [("1", "message", "a"), ("1", "message", "b")]


def test_id_with_nul_ignored() -> None:
    assert summary(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n") == [
        (EVENT, "1", "message", "a", None, "1"),
        (EVENT, None, "message", "b", None, "1"),
    ]


def test_id_with_nul_keeps_earlier_id_of_same_block() -> None:
    assert summary(b"id: 5\nid: x\x00\ndata: a\n\n") == [(EVENT, "5", "message", "a", None, "5")]


def test_empty_id_resets() -> None:
    assert summary(b"id: 1\ndata: a\n\nid\ndata: b\n\nid:\n\n") == [
        (EVENT, "1", "message", "a", None, "1"),
        (EVENT, "", "message", "b", None, ""),
        (EMPTY, "", "", None, None, ""),
    ]


def test_id_only_block_moves_last_event_id() -> None:
    assert summary(b"id: 9\n\ndata: a\n\n") == [
        (EMPTY, "9", "", None, None, "9"),
        (EVENT, None, "message", "a", None, "9"),
    ]


def test_id_keeps_surrounding_spaces_but_one() -> None:
    assert summary(b"id:  x \ndata: a\n\n")[0][1] == " x "


# -- retry ------------------------------------------------------------------------------------------------------


def test_retry_digits_only() -> None:
    assert summary(b"retry: 1500\ndata: a\n\n") == [(EVENT, None, "message", "a", 1500, "")]


@pytest.mark.parametrize("value", [b"1.5", b"-1", b" 10", b"10 ", b"1e3", b"", b"\xd9\xa1"])
def test_retry_non_digits_ignored(value: bytes) -> None:
    assert all_ways(b"retry: " + value + b"\ndata: a\n\n")[0].retry is None


def test_retry_takes_effect_without_event() -> None:
    parser = SSEParser()
    blocks = parser.feed(b"retry: 250\n\n")
    assert [(b.kind, b.retry) for b in blocks] == [(EMPTY, 250)]
    assert parser.retry == 250


@pytest.mark.parametrize(
    ("digits", "expected"),
    [
        (b"9" * 5000, MAX_RETRY),  # more digits than Python's int() takes from a string (4,300)
        (b"1" + b"0" * 4400, MAX_RETRY),
        (b"0" * 5000 + b"1500", 1500),  # leading zeros count for nothing
        (b"0" * 5000, 0),
        (str(MAX_RETRY).encode(), MAX_RETRY),
        (str(MAX_RETRY + 1).encode(), MAX_RETRY),
        (b"99999999999", MAX_RETRY),
    ],
)
def test_huge_retry_is_valid_and_clamped(digits: bytes, expected: int) -> None:
    data = b"id: 1\ndata: a\n\nid: 2\nevent: e\ndata: b\nretry: " + digits + b"\n\nid: 3\ndata: c\n\n"
    blocks = all_ways(data)
    assert [(b.id, b.type, b.data, b.retry) for b in blocks] == [
        ("1", "message", "a", None),
        ("2", "e", "b", expected),
        ("3", "message", "c", None),
    ]
    parser = SSEParser()
    parser.feed(data)
    assert parser.retry == expected


# -- End of stream ----------------------------------------------------------------------------------------------


def test_unfinished_event_discarded_with_its_id() -> None:
    parser = SSEParser()
    blocks = parser.feed(b"id: 1\ndata: a\n\nid: 2\ndata: b\n") + parser.close()
    assert [(b.kind, b.data) for b in blocks] == [(EVENT, "a"), (UNFINISHED, None)]
    assert blocks[-1].raw == b"id: 2\ndata: b\n"
    assert parser.last_event_id == "1"


def test_retry_of_an_unfinished_final_block_takes_effect() -> None:
    # Its id and data are discarded, but a retry line that ended was applied as it was read.
    parser = SSEParser()
    blocks = parser.feed(b"retry: 100\n\nid: 1\ndata: a\n\nid: 2\nretry: 7777\ndata: b\n") + parser.close()
    assert [(b.kind, b.retry) for b in blocks] == [(EMPTY, 100), (EVENT, None), (UNFINISHED, 7777)]
    assert parser.retry == 7777 and parser.last_event_id == "1"
    assert [(b.kind, b.retry) for b in all_ways(b"data: a\n\nretry: 5\nretry: 6\nretry: x\n")][-1] == (UNFINISHED, 6)
    assert [(b.kind, b.retry) for b in all_ways(b"data: a\n\nretry: 5\r")][-1] == (UNFINISHED, 5)  # a CR at the end
    assert [(b.kind, b.retry) for b in all_ways(b"retry: " + b"9" * 5000 + b"\r\n")] == [(UNFINISHED, MAX_RETRY)]


def test_retry_without_its_line_end_at_the_end_does_not_count() -> None:
    parser = SSEParser()
    blocks = parser.feed(b"data: a\n\nretry: 7777") + parser.close()
    assert [(b.kind, b.retry) for b in blocks] == [(EVENT, None), (UNFINISHED, None)]
    assert parser.retry is None
    assert [(b.kind, b.retry) for b in all_ways(b"retry: 5\nretry: 6")] == [(UNFINISHED, 5)]


def test_feed_after_close_is_handed_on() -> None:
    parser = SSEParser()
    parser.close()
    assert [(b.kind, b.raw) for b in parser.feed(b"data: x\n\n")] == [(UNFINISHED, b"data: x\n\n")]


def test_close_is_idempotent() -> None:
    parser = SSEParser()
    parser.feed(b"data: a")
    assert len(parser.close()) == 1
    assert parser.close() == []


# -- Bounds -----------------------------------------------------------------------------------------------------


def test_oversize_line_handed_on_not_buffered() -> None:
    parser = SSEParser(max_size=64)
    out = parser.feed(b"data: " + b"x" * 100)
    assert [b.kind for b in out] == [OVERSIZE]
    assert parser.pending == 0
    out = parser.feed(b"y" * 1000)
    assert [(b.kind, len(b.raw)) for b in out] == [(OVERSIZE, 1000)]
    assert parser.pending == 0
    out = parser.feed(b"\n\ndata: ok\n\n")
    assert [(b.kind, b.raw, b.data) for b in out] == [(OVERSIZE, b"\n\n", None), (EVENT, b"data: ok\n\n", "ok")]


def test_oversize_event_in_one_chunk() -> None:
    big = b"id: 7\n" + b"data: " + b"x" * 80 + b"\n\n"
    assert summary(big + b"data: ok\n\n", max_size=64) == [
        (OVERSIZE, None, "", None, None, ""),
        (EVENT, None, "message", "ok", None, ""),
    ]


def test_oversize_event_does_not_move_last_event_id() -> None:
    parser = SSEParser(max_size=32)
    parser.feed(b"id: 1\ndata: a\n\nid: 2\ndata: " + b"x" * 64 + b"\n\n")
    assert parser.last_event_id == "1"


def test_event_at_exact_bound_is_kept() -> None:
    block = b"data: " + b"x" * 10 + b"\n\n"
    assert [b.kind for b in all_ways(block, max_size=len(block))] == [EVENT]
    assert [b.kind for b in normalise(all_ways(block, max_size=len(block) - 1))] == [OVERSIZE]


def test_oversize_ends_at_crlf_terminator() -> None:
    data = b"data: " + b"x" * 50 + b"\r\n\r\ndata: b\r\n\r\n"
    assert [(b.kind, b.data) for b in normalise(all_ways(data, max_size=16))] == [(OVERSIZE, None), (EVENT, "b")]


def test_pending_never_exceeds_bound() -> None:
    parser = SSEParser(max_size=100)
    rng = random.Random(1)
    for _ in range(2000):
        parser.feed(bytes(rng.choice(b"ab:\n\r ") for _ in range(rng.randrange(1, 40))))
        assert parser.pending <= 100


def test_max_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SSEParser(0)


def test_blocks_are_frozen() -> None:
    block = parse(b"data: a\n\n")[0]
    with pytest.raises(AttributeError):
        block.data = "b"  # type: ignore[misc]


# -- Properties -------------------------------------------------------------------------------------------------

_field_line = st.one_of(
    st.builds(lambda v: b"data: " + v, st.binary(max_size=12).filter(lambda b: b"\n" not in b and b"\r" not in b)),
    st.builds(lambda v: b"id: " + v, st.sampled_from([b"1", b"22", b"", b"a\x00b", b"x y"])),
    st.sampled_from([b"event: e", b"event:", b"retry: 10", b"retry: x", b": c", b"data", b"id", b"foo"]),
)
_eol = st.sampled_from([b"\n", b"\r\n", b"\r"])
_stream = st.lists(st.tuples(_field_line, _eol), max_size=30).map(
    lambda pairs: b"".join(line + eol for line, eol in pairs)
)


@settings(max_examples=300, deadline=None)
@given(_stream, st.lists(st.integers(min_value=0, max_value=400), max_size=8), st.sampled_from([24, 64, 4096]))
def test_any_split_gives_the_same_blocks(data: bytes, cuts: list[int], max_size: int) -> None:
    whole = feed_in([data], max_size)
    assert b"".join(b.raw for b in whole) == data
    assert normalise(feed_in(split_at(data, cuts), max_size)) == normalise(whole)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=300), max_size=8))
def test_arbitrary_bytes_never_raise_and_are_all_handed_on(data: bytes, cuts: list[int]) -> None:
    blocks = feed_in(split_at(data, cuts), max_size=32)
    assert b"".join(b.raw for b in blocks) == data


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_rule_cases_at_random_splits(draw: st.DataObject) -> None:
    if not CASES:  # the rule tests above fill CASES; run alone, this one builds its own
        all_ways(b"id: 1\ndata: a\r\n\r\n")
    data = draw.draw(st.sampled_from(CASES))
    cuts = draw.draw(st.lists(st.integers(min_value=0, max_value=len(data)), max_size=10))
    assert normalise(feed_in(split_at(data, cuts))) == normalise(feed_in([data]))


IdReader = Callable[[bytes], str | Literal[False] | None]
ID_READERS = [
    pytest.param(single_event_id_py, id="python"),
    # Without the C part, single_event_id is single_event_id_py: the case is skipped, not run twice.
    pytest.param(single_event_id, id="c", marks=pytest.mark.skipif(not COMPILED, reason="the C part is not built")),
]


@pytest.mark.parametrize("single_event_id", ID_READERS)
def test_single_event_id_reads_one_plain_event(single_event_id: IdReader) -> None:
    assert single_event_id(b"data: a\n\n") is None
    assert single_event_id(b"data\n\n") is None  # "data" with no colon: one empty line of data
    assert single_event_id(b"id: 7\ndata: a\n\n") == "7"
    assert single_event_id(b"id:8\ndata:a\n\n") == "8"  # the space after the colon is optional
    assert single_event_id(b"id:  9\ndata: a\n\n") == " 9"  # only one space is removed
    assert single_event_id(b"id: 9\nevent: e\ndata: a\n\n") == "9"
    assert single_event_id(b"id: u\r\nevent: message\r\ndata: {}\r\n\r\n") == "u"  # sse-starlette (MCP Python)
    assert single_event_id(b"event: message\nid: t\ndata: {}\n\n") == "t"  # the MCP TypeScript SDK
    assert single_event_id(b'id: 3\ndata: {\ndata:  "a": 1\ndata: }\n\n') == "3"  # pretty-printed JSON
    assert single_event_id(b"data: a\nid: 4\ndata: b\nevent\n\n") == "4"  # any order; "event" alone
    assert single_event_id(b"id: 1\nid: 2\ndata: a\n\n") == "2"  # the last id counts
    assert single_event_id(b"id\ndata: a\n\n") == ""  # "id" with no colon: an empty id (it resets)
    assert single_event_id(b"id: \xff7\ndata: a\n\n") == "\ufffd7"  # invalid UTF-8 replaced, as the parser does
    declined = [
        b"",
        b"\n\n",
        b"data: a\n",  # no empty line
        b"data: a\n\nx",
        b"data: a\n\n\n",  # two
        b"data: a\n\ndata: b\n\n",  # two events
        b"\ndata: a\n\n",  # an empty block first
        b"id: 7\n\n",  # no data: dispatches nothing
        b"retry: 5\ndata: a\n\n",
        b": note\ndata: a\n\n",
        b"foo: x\ndata: a\n\n",
        b"Data: a\n\n",  # field names are case-sensitive
        b"data : a\n\n",
        b"\xef\xbb\xbfdata: a\n\n",
        b"id: a\x00b\ndata: a\n\n",  # an id with NUL is ignored: the general parser decides
        b"id: 1\nid: a\x00b\ndata: a\n\n",
        b"data: a\r\n\n",  # mixed line ends
        b"data: a\n\r\n",
        b"data: a\r\r",  # CR line ends
        b"data: a\rid: 1\r\n\r\n",  # a lone CR
        b"data: a\nid: 1\r\n\r\n",  # a lone LF
        b"data: a\r\n\r\n\r\n",
    ]
    for chunk in declined:
        assert single_event_id(chunk) is False, chunk


def _as_parsed(chunk: bytes) -> str | Literal[False] | None:
    """The id of the one event ``chunk`` is, as the general parser reads it; False: it is not exactly one event."""
    parser = SSEParser(max(DEFAULT_MAX_SIZE, len(chunk)))  # (a chunk's size is the caller's to check)
    blocks = parser.feed(chunk) + parser.close()
    if len(blocks) == 1 and blocks[0].kind is EVENT and blocks[0].raw == chunk:
        return blocks[0].id
    return False


_values = st.one_of(
    st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=12).map(str.encode),
    st.sampled_from([b"", b" ", b" x ", b":", b"a:b", b"\x00", b"\xef\xbb\xbf", b"\xff"]),
    st.integers(min_value=1, max_value=300_000).map(lambda n: b"v" * n),  # huge values
)
_field = st.tuples(st.sampled_from([b"id", b"event", b"data"]), st.sampled_from([b": ", b":", b""]), _values).map(
    lambda f: f[0] + (f[1] + f[2] if f[1] else b"")  # (no colon: the name alone)
)


@st.composite
def _single_events(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A single event (LF or CRLF throughout, one data line at least), or a near miss; and whether it is one."""
    lines = draw(st.lists(_field, min_size=0, max_size=6))
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), b"data" + draw(st.sampled_from([b": ", b":"])) + b"x")
    eol = draw(st.sampled_from([b"\n", b"\r\n"]))
    chunk = eol.join(lines) + eol + eol
    plain = any(line[:5] == b"data:" or line == b"data" for line in lines) and not any(
        (line[:3] == b"id:" or line == b"id") and b"\x00" in line for line in lines
    )
    miss = draw(
        st.sampled_from(
            [
                None,
                b"retry: 10",
                b"retry",
                b": comment",
                b":",
                b"foo: bar",
                b"ID: 1",
                b"Data: x",
                b"data : x",
                b"",
                b"\xef\xbb\xbfdata: x",
                b"id: \x00",
                b"\r",
                b"\n",
                b"\r\n",
                b"\rid: 9",  # (inside a line: a lone line end starts a field of its own)
                b"\nid: 9",
                b"\r\nid: 9",
                b"\n\nid: 9",
                b"x",
            ]
        )
    )
    if miss is not None:
        plain = False
        where = draw(st.sampled_from(["line", "bytes", "start", "end"]))
        if where == "line":  # as a line of its own among the others
            at = draw(st.integers(0, len(lines)))
            chunk = eol.join([*lines[:at], miss, *lines[at:]]) + eol + eol
        elif where == "bytes":  # anywhere in the bytes
            at = draw(st.integers(0, len(chunk)))
            chunk = chunk[:at] + miss + chunk[at:]
        elif where == "start":
            chunk = miss + chunk
        else:
            chunk = chunk + miss
    elif draw(st.integers(0, 9)) == 0:  # the final empty line missing, or other line ends at the end
        plain = False
        chunk = chunk[: -len(eol)] + draw(st.sampled_from([b"", b"\r", b"\n", b"\r\n" if eol == b"\n" else b"\n\n"]))
    return chunk, plain


@pytest.mark.parametrize("single_event_id", ID_READERS)
@settings(max_examples=500, deadline=None)
@given(_single_events())
def test_single_event_id_agrees_with_the_parser(single_event_id: IdReader, case: tuple[bytes, bool]) -> None:
    chunk, plain = case
    fast = single_event_id(chunk)
    if fast is not False:  # what it reads, the general parser reads the same way
        expected = _as_parsed(chunk)
        assert expected is not False and fast == expected and type(fast) is type(expected), chunk[:200]
    if plain:  # and a single event of the plain kind it does read
        assert fast is not False, chunk[:200]


class _Broken(Exception):
    pass


@pytest.mark.parametrize("where", ["_block", "_scan"])
def test_an_unexpected_error_loses_no_byte(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    # No input makes the parser raise; were it to all the same, held() gives back every byte not handed on.
    def broken(*args: object, **kwargs: object) -> None:
        raise _Broken

    parser = SSEParser()
    assert [b.data for b in parser.feed(b"\xef\xbb\xbfdata: a\n\nid: 2\n: note\nevent: e")] == [None, "a"]
    parser.feed(b"\ndata: b")
    monkeypatch.setattr(SSEParser, where, broken)
    with pytest.raises(_Broken):
        parser.feed(b"\n\ndata: c\n\nid: 4")
    assert parser.held() == b"id: 2\n: note\nevent: e\ndata: b\n\ndata: c\n\nid: 4"


def test_an_unexpected_error_at_close_loses_no_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise _Broken

    parser = SSEParser()
    parser.feed(b"data: a\n\nid: 5\nda")
    parser.feed(b"ta: \r\r")  # (a CR at the end: held back for the LF that may follow, until close)
    monkeypatch.setattr(SSEParser, "_block", broken)
    with pytest.raises(_Broken):
        parser.close()
    assert parser.held() == b"id: 5\ndata: \r\r"


def test_an_unexpected_error_at_the_start_loses_no_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise _Broken

    parser = SSEParser()
    parser.feed(b"\xef")
    monkeypatch.setattr(SSEParser, "_scan", broken)
    with pytest.raises(_Broken):
        parser.feed(b"\xbb\xbfdata: a\n\n")
    assert parser.held() == b"\xef\xbb\xbfdata: a\n\n"


@pytest.mark.skipif(os.environ.get("CI") != "true", reason="CI=true is not set: only CI must have the C part")
def test_the_c_part_is_built_where_ci_runs() -> None:
    # The install builds it where a C compiler is at hand (setup.py); CI has one, so there both versions are tested.
    assert COMPILED


c_only = pytest.mark.skipif(not COMPILED, reason="the C part is not built: there is one version to test")


@c_only
@settings(max_examples=1000, deadline=None)
@given(_single_events())
def test_the_c_and_python_versions_agree_on_near_events(case: tuple[bytes, bool]) -> None:
    chunk = case[0]
    c, py = single_event_id(chunk), single_event_id_py(chunk)
    assert c == py and type(c) is type(py), chunk[:200]


@c_only
def test_the_c_and_python_versions_agree_on_random_chunks() -> None:
    # Chunks of pieces that line ends, field names and odd bytes are made of, mostly near one event; where the C
    # version reads an id, the general parser reads the same one event with that id.
    rng = random.Random(2026)
    pieces = [b"id: ", b"id:", b"id", b"data:", b"data: x", b"data", b"event: e", b"event", b": c", b"retry: 1"]
    pieces += [b"7", b"\xff", b"\x00", b"\r", b"\n", b"\r\n", b"\n\n", b"\r\n\r\n", b" ", b"\xef\xbb\xbf"]
    taken = 0
    previous = b""
    for _ in range(100_000):
        chunk = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 10)))
        if rng.random() < 0.5:  # mostly near a whole event
            eol = rng.choice([b"\n", b"\r\n"])
            chunk = rng.choice([b"id: ", b"event: ", b"data: "]) + chunk + eol + b"data: y" + eol + eol
        c, py = single_event_id(chunk), single_event_id_py(chunk)
        assert c == py and type(c) is type(py), chunk
        for events in (chunk, chunk + previous):  # and as events one after another
            assert whole_events(events) == whole_events_py(events), events
        previous = chunk
        if c is not False:
            taken += 1
            parser = SSEParser()
            parser.feed(b": past the start\n\n")
            blocks = parser.feed(chunk)
            assert [(b.kind, b.id) for b in blocks] == [(EVENT, c)] and parser.idle, chunk
    assert taken > 10_000


def test_without_the_c_part_ids_are_read_in_python(monkeypatch: pytest.MonkeyPatch) -> None:
    # Not built (the import fails), built from another source (another ABI), or turned off: the Python version.
    monkeypatch.setitem(sys.modules, "sse_resume_core._speedups", None)  # (an import of it raises ImportError)
    monkeypatch.delattr(sse_resume_core, "_speedups", raising=False)
    python = (single_event_id_py, whole_events_py, False)
    assert _parser._compiled() == python
    monkeypatch.undo()
    monkeypatch.setenv("SSE_RESUME_PURE_PYTHON", "1")
    assert _parser._compiled() == python
    monkeypatch.setenv("SSE_RESUME_PURE_PYTHON", "0")
    if COMPILED:  # (else it was not built, or turned off when this process started)
        assert _parser._compiled() == (single_event_id, whole_events, True)
        from sse_resume_core import _speedups

        monkeypatch.setattr(_speedups, "ABI", _speedups.ABI - 1)
        assert _parser._compiled() == python


# -- Line ends all alike, or not: the parser's two ways of cutting blocks ----------------------------------------


def spec_read(data: bytes) -> tuple[list[tuple[str, str, str]], str, int | None]:
    """The events an EventSource fires for the stream ``data`` (last event id, type, data), its last event id at
    the end and its last retry: the WHATWG steps written out plainly, line by line, as the oracle of the tests
    below (the parser cuts blocks first and reads them by other code)."""
    text = data.decode("utf-8", "replace").removeprefix("\ufeff")
    lines = re.split(r"\r\n|\r|\n", text)[:-1]  # (the last piece has no line end: not a line)
    fired: list[tuple[str, str, str]] = []
    last_id, id_buffer, etype, buffer, retry = "", "", "", "", None
    for line in lines:
        if not line:
            last_id = id_buffer  # (the last event id string takes the buffer's value at each empty line)
            if buffer:
                fired.append((last_id, etype or "message", buffer.removesuffix("\n")))
            etype, buffer = "", ""
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            buffer += value + "\n"
        elif name == "event":
            etype = value
        elif name == "id" and "\0" not in value:
            id_buffer = value
        elif name == "retry" and value and all(c in "0123456789" for c in value):
            retry = min(int(value), MAX_RETRY)
    return fired, last_id, retry


_spec_line = st.one_of(
    st.builds(lambda v: b"data: " + v, st.sampled_from([b"x", b"", b" y", b"\xc3\xa9", b"\xff", b"a:b", b"\x00"])),
    st.builds(lambda v: b"id: " + v, st.sampled_from([b"1", b"22", b"", b"a\x00b", b"x y", b"\xe2\x82"])),
    st.sampled_from([b"event: e", b"event:", b"retry: 10", b"retry: x", b": c", b"data", b"id", b"foo", b"data:z"]),
)
_spec_blocks = st.lists(st.lists(_spec_line, min_size=1, max_size=5), max_size=12)


def _join(blocks: list[list[bytes]], ends: list[bytes]) -> bytes:
    """Each block's lines and its empty line, the n-th line end being ``ends[n % len(ends)]``."""
    lines = [line for block in blocks for line in [*block, b""]]
    return b"".join(line + ends[n % len(ends)] for n, line in enumerate(lines))


def _read(blocks: list[Block]) -> tuple[list[tuple[str, str, str]], str, int | None]:
    fired = [(b.last_event_id, b.type, b.data) for b in blocks if b.data is not None]
    retries = [b.retry for b in blocks if b.retry is not None]
    return fired, blocks[-1].last_event_id if blocks else "", retries[-1] if retries else None


@settings(max_examples=300, deadline=None)
@given(
    _spec_blocks,
    st.sampled_from([[b"\n"], [b"\r\n"], [b"\r"], [b"\r\n", b"\n"], [b"\n", b"\r\n", b"\r"], [b"\r\n", b"\r"]]),
    st.lists(st.integers(min_value=0, max_value=600), max_size=10),
    st.booleans(),
)
def test_uniform_and_mixed_line_ends_read_as_the_spec_says(
    blocks: list[list[bytes]], ends: list[bytes], cuts: list[int], bom: bool
) -> None:
    # LF throughout and CRLF throughout are cut at their terminators with one search each (see SSEParser._scan);
    # anything else goes line by line. Fed whole and cut anywhere (inside a CRLF, inside a terminator), every
    # way reads what the spec's steps read, and hands every byte on, block by block.
    data = (b"\xef\xbb\xbf" if bom else b"") + _join(blocks, ends)
    expected = spec_read(data)
    for chunks in ([data], split_at(data, cuts)):
        got = feed_in(chunks)
        assert b"".join(b.raw for b in got) == data
        assert _read(got) == expected
        if len(ends) == 1:  # (mixed: a lone CR and the LF of the next, empty, line are one CRLF)
            assert all(b.kind is not UNFINISHED for b in got)  # every block ends with its empty line


@pytest.mark.parametrize("end", [b"\n", b"\r\n"])
def test_a_terminator_cut_anywhere_completes_its_block_once(end: bytes) -> None:
    events = [b"id: %d%sevent: e%sdata: v%d%s%s" % (n, end, end, n, end, end) for n in range(3)]
    data = b"".join(events)
    for cut in range(1, len(data)):
        parser = SSEParser()
        first, second = parser.feed(data[:cut]), parser.feed(data[cut:])
        assert [b.raw for b in first + second] == events, cut
        assert [b.id for b in first + second] == ["0", "1", "2"]
        assert parser.idle and parser.last_event_id == "2"


def test_crlf_throughout_with_one_other_line_end_is_read_line_by_line() -> None:
    # One lone LF or CR among CRLFs: the block it is in ends where the spec says, not at the next b"\r\n\r\n".
    assert events(b"data: a\r\n\ndata: b\r\n\r\n") == [("", "message", "a"), ("", "message", "b")]
    assert events(b"data: a\r\rdata: b\r\n\r\n") == [("", "message", "a"), ("", "message", "b")]
    assert events(b"id: 1\r\ndata: a\nb\r\n\r\n") == [("1", "message", "a")]  # ("b": a field with no value)
    assert [b.raw for b in parse(b"data: a\r\n\r\ndata: b\n\n")] == [b"data: a\r\n\r\n", b"data: b\n\n"]


def test_crlf_throughout_reads_every_field() -> None:
    data = b"retry: 70\r\n: c\r\nid: 9\r\nevent: e\r\ndata: a\r\ndata\r\ndata:b\r\n\r\nid\r\n\r\n"
    assert summary(data) == [
        (EVENT, "9", "e", "a\n\nb", 70, "9"),
        (EMPTY, "", "", None, None, ""),
    ]
    assert spec_read(data) == ([("9", "e", "a\n\nb")], "", 70)


# -- whole_events: a chunk of several whole events, read at once -------------------------------------------------


def _as_blocks(chunk: bytes) -> tuple[list[bytes], list[str | None]] | None:
    """What the parser gives for ``chunk`` on a stream between blocks, when that is only EVENT blocks."""
    parser = SSEParser()
    parser.feed(b": past the start\n\n")
    blocks = parser.feed(chunk)
    if not parser.idle or not blocks or any(b.kind is not EVENT for b in blocks):
        return None
    return [b.raw for b in blocks], [b.id for b in blocks]


EventsReader = Callable[[bytes], tuple[list[bytes], list[str | None]] | None]
EVENTS_READERS = [
    pytest.param(whole_events_py, id="python"),
    pytest.param(whole_events, id="c", marks=pytest.mark.skipif(not COMPILED, reason="the C part is not built")),
]


@pytest.mark.parametrize("whole_events", EVENTS_READERS)
def test_whole_events_reads_plain_events_in_batches(whole_events: EventsReader) -> None:
    assert whole_events(b"id: 1\nevent: e\ndata: a\n\nid: 2\ndata: b\ndata: c\n\n") == (
        [b"id: 1\nevent: e\ndata: a\n\n", b"id: 2\ndata: b\ndata: c\n\n"],
        ["1", "2"],
    )
    crlf = b"id: 1\r\nevent: e\r\ndata: a\r\n\r\nevent: e\r\nid:2\r\ndata:\r\n\r\n"
    cut = crlf.index(b"event: e\r\nid")
    assert whole_events(crlf) == ([crlf[:cut], crlf[cut:]], ["1", "2"])
    assert whole_events(b"data: a\n\ndata: b\n\n") == ([b"data: a\n\n", b"data: b\n\n"], [None, None])
    assert whole_events(b"id:  \xff7 \ndata: a\n\n") == ([b"id:  \xff7 \ndata: a\n\n"], [" \ufffd7 "])
    # Each event as single_event_id reads it alone: what the relay does with them is the relay's to decide.
    for chunk, ids in [
        (b"id: 1\ndata: a\n\nid: \ndata: b\n\n", ["1", ""]),  # an empty id: a reset
        (b"id: 1\ndata: a\n\ndata: b\n\n", ["1", None]),  # one with an id, one without
        (b"data\n\nid\ndata: a\n\n", [None, ""]),  # field names without a colon
        (b"id: 1\nid: 2\ndata: a\n\n", ["2"]),  # the last id counts
    ]:
        found = whole_events(chunk)
        assert found is not None and found[1] == ids and b"".join(found[0]) == chunk, chunk
    declined = [
        b"",
        b"id: 1\x00\ndata: a\n\n",
        b"id: 1\ndata: a\n\n: c\n\n",
        b"id: 1\ndata: a\n\nretry: 5\ndata: b\n\n",
        b"id: 1\ndata: a\n\nid: 2\n\n",  # no data: not an event
        b"id: 1\ndata: a\n\nid: 2\ndata: b\n",  # the last one unfinished
        b"id: 1\ndata: a\n\n\nid: 2\ndata: b\n\n",  # an extra empty line
        b"\n\nid: 2\ndata: b\n\n",
        b"id: 1\ndata: a\r\n\r\nid: 2\ndata: b\n\n",  # line ends mixed
        b"id: 1\r\ndata: a\nb\r\n\r\n",
        b"id: 1\r\ndata: a\rb\r\n\r\n",
        b"id: 1\r\ndata: a\r\n\r\n\r\n",
        b"\xef\xbb\xbfdata: a\n\n",
    ]
    for chunk in declined:
        assert whole_events(chunk) is None, chunk


@pytest.mark.parametrize("whole_events", EVENTS_READERS)
def test_whole_events_agrees_with_the_parser_on_random_chunks(whole_events: EventsReader) -> None:
    rng = random.Random(2027)
    lines = [b"id: 7", b"id:8", b"id: ", b"id: \x00", b"data: x", b"data:", b"data", b"event: e", b": c", b"retry: 1"]
    lines += [b"data: \xff", b"id: \xe2\x82", b"x", b"", b"\r"]
    taken = 0
    for _ in range(20_000):
        end = rng.choice([b"\n", b"\r\n"])
        events = []
        for _ in range(rng.randint(1, 5)):
            if rng.random() < 0.7:  # mostly near the plain kinds
                fields = [rng.choice(lines[:2]), *(rng.choice([b"event: u"]) for _ in range(rng.randint(0, 1)))]
                fields.append(b"data: %d" % rng.randrange(100))
                fields += [rng.choice(lines) for _ in range(rng.randint(0, 1))]
            else:
                fields = [rng.choice(lines) for _ in range(rng.randint(0, 4))]
            rng.shuffle(fields)
            events.append(b"".join(f + end for f in fields) + end)
        chunk = b"".join(events)
        if rng.random() < 0.1:
            chunk = chunk.replace(b"\r\n", b"\n", 1)
        found = whole_events(chunk)
        if found is not None:
            taken += 1
            raws, ids = found
            assert _as_blocks(chunk) == (raws, ids), chunk
        if whole_events is not whole_events_py:
            assert whole_events_py(chunk) == found, chunk  # (the Python version is the oracle of the C one)
    assert taken > 500


# -- plain_batch and cut_at_blocks: what the relay and the keeper take whole -----------------------------------


def test_a_plain_batch_has_ids_on_all_its_events_or_none_and_none_oversize() -> None:
    two = b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n"
    assert plain_batch(two, 1024) == ([two[:15], two[15:]], ["1", "2"])
    assert plain_batch(b"data: a\n\ndata: b\n\n", 1024) == ([b"data: a\n\n", b"data: b\n\n"], [None, None])
    assert plain_batch(two, 14) is None  # (each is 15 bytes: the parser hands them on in pieces)
    assert plain_batch(two, 15) is not None
    assert plain_batch(b"id: 1\ndata: a\n\ndata: b\n\n", 1024) is None  # ids on some
    assert plain_batch(b"id: 1\ndata: a\n\nid\ndata: b\n\n", 1024) is None  # a reset
    assert plain_batch(b"id: 1\ndata: a\n\n: ping\n\n", 1024) is None  # not all plain events


@pytest.mark.parametrize("idle", [True, False])
def test_the_cuts_keep_every_byte_and_cut_at_the_first_and_last_empty_line(idle: bool) -> None:
    rng = random.Random(7)
    data = b"".join(b"id: %d\ndata: %d\n\n" % (n, n) for n in range(40))
    for _ in range(300):
        a, b = sorted(rng.sample(range(len(data) + 1), 2))
        chunk = data[a:b]
        pieces = cut_at_blocks(chunk, idle)
        assert b"".join(pieces) == chunk and all(pieces) and len(pieces) <= 3
        first, last = chunk.find(b"\n\n"), chunk.rfind(b"\n\n")
        if first < 0:
            assert pieces == (chunk,)
            continue
        if not idle:  # the end of the block the parser holds comes alone, to the first empty line
            assert pieces[0] == chunk[: first + 2]
        whole = chunk[first + 2 if not idle else 0 : last + 2]
        assert not whole or whole in pieces  # whole blocks in one piece
        assert chunk[last + 2 :] in (pieces[-1], b"")  # the start of the next block alone

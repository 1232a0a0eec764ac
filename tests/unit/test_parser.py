"""The event-stream parser, one test per rule of the WHATWG "Interpreting an event stream" section.

Every case is fed whole, one byte at a time, and split at random points; all three must agree. Property tests
check that any split of any stream gives what feeding it whole gives, and that no input makes the parser raise.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sse_resume_core import Block, BlockKind, SSEParser, parse
from sse_resume_core._parser import COMPILED, plain_event_id, plain_event_id_py

EVENT, EMPTY, OVERSIZE, UNFINISHED = BlockKind.EVENT, BlockKind.EMPTY, BlockKind.OVERSIZE, BlockKind.UNFINISHED
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


def test_bom_kept_in_raw_bytes() -> None:
    blocks = all_ways(b"\xef\xbb\xbfid: 1\ndata: a\n\n")
    assert blocks[0].raw == b"\xef\xbb\xbfid: 1\ndata: a\n\n"
    assert blocks[0].id == "1"


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


# -- End of stream ----------------------------------------------------------------------------------------------


def test_unfinished_event_discarded_with_its_id() -> None:
    parser = SSEParser()
    blocks = parser.feed(b"id: 1\ndata: a\n\nid: 2\ndata: b\n") + parser.close()
    assert [(b.kind, b.data) for b in blocks] == [(EVENT, "a"), (UNFINISHED, None)]
    assert blocks[-1].raw == b"id: 2\ndata: b\n"
    assert parser.last_event_id == "1"


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


@settings(max_examples=300, deadline=None)
@given(_stream)
def test_single_event_fast_path_agrees_with_feed(data: bytes) -> None:
    """Feeding block by block through feed_single_event (or feed when it declines) matches feed alone."""
    reference = SSEParser()
    blocks = reference.feed(data)
    fast = SSEParser()
    fast.feed(b": start\n\n")  # past the start of the stream, where a BOM may still be arriving
    for block in blocks:
        taken, event_id = fast.feed_single_event(block.raw)
        if taken:
            assert block.kind is EVENT and event_id == block.id and block.retry is None
        else:
            assert [(b.kind, b.id, b.last_event_id) for b in fast.feed(block.raw)] == [
                (block.kind, block.id, block.last_event_id)
            ]
        assert fast.last_event_id == block.last_event_id


def test_single_event_fast_path_declines_what_it_cannot_take() -> None:
    p = SSEParser()
    assert p.feed_single_event(b"data: a\n\n") == (False, None)  # the stream's first bytes (a BOM may come)
    p.feed(b": x\n\n")
    for chunk in (b"data: a\r\n\r\n", b"data: a\n\ndata: b\n\n", b"data: a\n", b"retry: 5\ndata: a\n\n"):
        assert p.feed_single_event(chunk) == (False, None), chunk
    assert p.feed_single_event(b"id: 7\ndata: a\n\n") == (True, "7") and p.last_event_id == "7"
    assert p.feed_single_event(b"id:8\ndata:a\n\n") == (True, "8")  # the space after the colon is optional
    assert p.feed_single_event(b"id:  9\ndata: a\n\n") == (True, " 9")  # only one space is removed
    assert p.feed_single_event(b"id: 9\nevent: e\ndata: a\n\n") == (True, "9")
    for chunk in (b"id: 1\nid: 2\ndata: a\n\n", b"id: a\x00b\ndata: a\n\n", b"data: a\ndata: b\n\n"):
        assert p.feed_single_event(chunk) == (False, None), chunk  # the general parser decides these
    assert p.last_event_id == "9"
    p.feed(b"data: held")
    assert p.feed_single_event(b"id: 8\ndata: b\n\n") == (False, None)  # bytes are held: they come first


PLAIN_IMPLEMENTATIONS = [
    pytest.param(plain_event_id_py, id="python"),
    # Without the C part, plain_event_id is plain_event_id_py: the case is skipped, not run twice.
    pytest.param(plain_event_id, id="c", marks=pytest.mark.skipif(not COMPILED, reason="the C part is not built")),
]

# The plain shape as plain_event_id_py's docstring states it, written as a regular expression: the oracle both
# versions are held to (so that neither is checked against itself).
_PLAIN_SHAPE = re.compile(rb"id: ([^\n\r\x00]*)\ndata:[^\n\r]*\n\n").fullmatch


def plain_shape_id(chunk: bytes) -> str | None:
    match = _PLAIN_SHAPE(chunk)
    return None if match is None else match.group(1).decode("utf-8", "replace")


@pytest.mark.skipif(os.environ.get("CI") != "true", reason="CI=true is not set: only CI must have the C part")
def test_the_c_part_is_built_where_ci_runs() -> None:
    # ./dev builds it when a C compiler is at hand; CI installs one, so there both versions are tested.
    assert COMPILED


@pytest.mark.parametrize("plain", PLAIN_IMPLEMENTATIONS)
def test_plain_event_id_reads_only_the_plain_shape(plain: Callable[[bytes], str | None]) -> None:
    assert plain(b"id: 7\ndata: a\n\n") == "7"
    assert plain(b"id: \ndata:\n\n") == ""  # an empty id (it resets the last event id)
    assert plain(b"id: \xff7\ndata: a\n\n") == "\ufffd7"  # invalid UTF-8 replaced, as the parser does
    assert plain(b"id:  7 \ndata: a\n\n") == " 7 "  # one space removed after the colon, nothing else
    declined = [
        b"",
        b"id: 7\n\n",
        b"id:7\ndata: a\n\n",  # (single_event_id takes these)
        b"id: 7\ndata: a\n",
        b"id: 7\ndata: a\n\n\n",
        b"id: 7\ndata: a\ndata: b\n\n",
        b"id: 7\nevent: e\ndata: a\n\n",
        b"id: 7\r\ndata: a\r\n\r\n",
        b"id: 7\ndata: a\r\n\n",
        b"id: 7\x00\ndata: a\n\n",
        b"data: a\nid: 7\n\n",
        b"id: 7\ndata: a\n\nid: 8\ndata: b\n\n",
        b"id: 7\ndat: a\n\n",
        b"id: 7\ndata",
    ]
    for chunk in declined:
        assert plain(chunk) is None, chunk


@pytest.mark.parametrize("plain", PLAIN_IMPLEMENTATIONS)
def test_plain_event_id_agrees_with_the_parser_on_random_chunks(plain: Callable[[bytes], str | None]) -> None:
    rng = random.Random(2026)
    pieces = [b"id: ", b"id:", b"data:", b"data: x", b"event: e", b"7", b"\xff", b"\x00", b"\r", b"\n", b"\n\n", b" "]
    taken = 0
    for _ in range(20_000):
        chunk = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        if rng.random() < 0.5:  # mostly near the plain shape
            chunk = b"id: " + chunk + b"\ndata: y\n\n"
        result = plain(chunk)
        assert result == plain_shape_id(chunk), chunk
        if result is not None:
            taken += 1
            parser = SSEParser()
            parser.feed(b": past the start\n\n")
            blocks = parser.feed(chunk)
            assert [(b.kind, b.id) for b in blocks] == [(EVENT, result)] and parser.idle, chunk
    assert taken > 1000

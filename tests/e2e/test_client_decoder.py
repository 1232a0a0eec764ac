"""The end-to-end clients' SSE decoding (harness.ClientDecoder: httpx-sse's decoders, its departures from the
WHATWG rules handled): each departure, checked on bytes written out by hand, whole and split at every byte."""

from __future__ import annotations

import pytest

from harness import ClientDecoder, Event


def decode(body: bytes, last_event_id: str = "") -> tuple[list[Event], ClientDecoder]:
    decoder = ClientDecoder(last_event_id)
    events = decoder.feed(body) + decoder.close()
    for cut in range(1, len(body)):  # the same, whatever the chunks
        split = ClientDecoder(last_event_id)
        assert split.feed(body[:cut]) + split.feed(body[cut:]) + split.close() == events, cut
        assert (split.last_event_id, split.retry, split.comments) == (
            decoder.last_event_id,
            decoder.retry,
            decoder.comments,
        )
    return events, decoder


def test_a_leading_byte_order_mark_is_stripped_once() -> None:
    events, _ = decode(b"\xef\xbb\xbfid: 1\ndata: a\n\n\xef\xbb\xbfdata: b\n\n")
    # The second BOM is inside the body: part of a field name the rules ignore, so that block has no data line.
    assert events == [Event("1", "1", "a")]


def test_blocks_without_a_data_line_are_no_events() -> None:
    body = b"id: 1\ndata: a\n\n: keep-alive\n\nretry: 50\n\nevent: x\n\nid: 2\n\ndata: b\n\n"
    events, decoder = decode(body)
    # httpx-sse alone makes events of the comment's block (its issue 35), the retry, the event type and the id.
    assert events == [Event("1", "1", "a"), Event(None, "2", "b")]
    assert decoder.retry == 50
    assert decoder.comments == [b": keep-alive"]


def test_an_empty_data_line_is_an_event_with_empty_data() -> None:
    events, _ = decode(b"data:\n\ndata\n\n")
    assert events == [Event(None, "", ""), Event(None, "", "")]


def test_ids_carry_over_from_the_last_connection_until_a_block_sets_one() -> None:
    events, decoder = decode(b"data: a\n\nid:\ndata: b\n\ndata: c\n\n", last_event_id="7")
    assert events == [Event(None, "7", "a"), Event("", "", "b"), Event(None, "", "c")]
    assert decoder.last_event_id == ""


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_every_kind_of_line_end(newline: bytes) -> None:
    body = newline.join([b"id: 5", b"data: x", b"data: y", b"", b"data: z", b"", b"data: cut"])
    events, _ = decode(body)
    assert events == [Event("5", "5", "x\ny"), Event(None, "5", "z")]  # the block the body ends in is dropped


def test_an_id_with_a_nul_is_ignored() -> None:
    events, _ = decode(b"id: 3\ndata: a\n\nid: 4\x005\ndata: b\n\n")
    assert events == [Event("3", "3", "a"), Event(None, "3", "b")]


def test_bad_utf8_is_replaced_not_raised() -> None:
    events, _ = decode(b"data: \xff\xfe\n\n")
    assert events == [Event(None, "", "\ufffd\ufffd")]

"""The Content-Encoding decoder: every encoding whole, byte by byte and split at random points; its bounds (bytes
and lines); its stops (corrupt, truncated, trailing bytes, what came before them kept); what it refuses."""

from __future__ import annotations

import gzip
import random
import sys
import zlib
from collections.abc import Callable

import brotli
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd  # (what mitmproxy installs before Python 3.14)

from sse_resume_core._decode import (
    ALLOWANCE,
    BROTLI_BEHIND,
    ENCODINGS,
    LINE_ALLOWANCE,
    LINES_PER_BYTE,
    MAX_RATIO,
    Decoder,
    UnsupportedEncoding,
    _cut,
    _lines,
    decoder_for,
)

BODY = b"".join(b'id: %d\ndata: {"n": %d, "text": "token %d"}\n\n' % (n, n, n % 7) for n in range(1, 400))


def events_of(data: bytes) -> list[bytes]:
    """``data`` cut after each blank line (the pieces join back to it)."""
    parts = data.split(b"\n\n")
    return [p + b"\n\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


def streamed(data: bytes, wbits: int) -> bytes:
    """As a server compresses a stream: flushed after every event, never finished."""
    c = zlib.compressobj(wbits=wbits)
    return b"".join(c.compress(e) + c.flush(zlib.Z_SYNC_FLUSH) for e in events_of(data))


def gzip_members(data: bytes, parts: int = 5) -> bytes:
    events = events_of(data)
    size = -(-len(events) // parts)
    return b"".join(gzip.compress(b"".join(events[i : i + size])) for i in range(0, len(events), size))


def zstd_frames(data: bytes, parts: int = 3) -> bytes:
    size = -(-len(data) // parts)
    return b"".join(zstd.compress(data[i : i + size]) for i in range(0, len(data), size))


# (encoding, how its body is made): every form a server may send
FORMS: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "gzip": ("gzip", gzip.compress),
    "gzip members": ("gzip", gzip_members),
    "gzip streamed": ("gzip", lambda d: streamed(d, 31)),
    "x-gzip": ("x-gzip", gzip.compress),
    "gzip holding zlib": ("gzip", zlib.compress),
    "deflate zlib": ("deflate", zlib.compress),
    "deflate raw": ("deflate", raw_deflate),
    "deflate raw streamed": ("deflate", lambda d: streamed(d, -15)),
    "br": ("br", brotli.compress),
    "zstd": ("zstd", zstd.compress),
    "zstd frames": ("zstd", zstd_frames),
}
FINISHED = {"gzip streamed", "deflate raw streamed"}  # bodies a server never finished: "ended inside" is said


def decode_all(encoding: str, chunks: list[bytes]) -> tuple[bytes, Decoder]:
    d = Decoder(encoding)
    out = b"".join(d.decode(c) for c in chunks) + d.finish()
    return out, d


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@pytest.mark.parametrize("form", list(FORMS))
def test_every_form_decodes_whole_and_byte_by_byte(form: str) -> None:
    encoding, make = FORMS[form]
    body = make(BODY)
    for chunks in ([body], [body[i : i + 1] for i in range(len(body))]):
        out, d = decode_all(encoding, chunks)
        assert out == BODY
        assert d.error.startswith("ended inside") if form in FINISHED else not d.error
        assert d.consumed == len(body) and d.produced == len(BODY)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(FORMS)), st.binary(max_size=3000), st.lists(st.integers(min_value=0), max_size=12))
def test_every_form_decodes_split_anywhere(form: str, payload: bytes, cuts: list[int]) -> None:
    encoding, make = FORMS[form]
    text = payload + b"\n\n"  # (the streamed forms compress event by event)
    body = make(text)
    out, d = decode_all(encoding, split(body, cuts))
    assert out == text
    if form not in FINISHED:
        assert not d.error


def test_a_streamed_body_cut_short_is_all_decoded_and_said_to_have_ended_inside() -> None:
    out, d = decode_all("gzip", [streamed(BODY, 31)])
    assert out == BODY
    assert d.error.startswith("ended inside its gzip data")


@pytest.mark.parametrize(
    ("encoding", "bomb"),
    [
        ("br", lambda: brotli.compress(b"\0" * (256 << 20), quality=5)),
        ("br small", lambda: brotli.compress(b"\0" * (8 << 20), quality=5)),  # all input taken, output pending
        ("br events", lambda: brotli.compress((b"data: " + b"x" * 152 + b"\n\n") * (1 << 20))),  # 80 bytes a line
        ("gzip", lambda: gzip.compress(b"\0" * (64 << 20))),
        ("deflate", lambda: raw_deflate(b"\0" * (64 << 20))),
        ("zstd", lambda: zstd.compress(b"\0" * (256 << 20))),
    ],
)
@pytest.mark.parametrize("step", [1 << 30, 65536, 997])
def test_a_bomb_stops_at_the_bound(encoding: str, bomb: Callable[[], bytes], step: int) -> None:
    if encoding not in BOMBS:
        BOMBS[encoding] = bomb()
    body = BOMBS[encoding]
    d = Decoder(encoding.split()[0])
    biggest = got = 0
    taken = 0
    for i in range(0, len(body), step):
        chunk = body[i : i + step]
        out = d.decode(chunk)
        taken += len(chunk)
        biggest = max(biggest, len(out))
        got += len(out)
        assert len(out) <= ALLOWANCE + MAX_RATIO * len(chunk)  # per chunk
        assert got <= ALLOWANCE + MAX_RATIO * taken  # per response
        if d.error:
            break
    assert d.error.startswith("decodes past the bound: more than ")
    assert d.produced == got and got > ALLOWANCE // 2
    assert d.decode(b"\0" * 100) == b"" and d.finish() == b""  # stopped: nothing more


BOMBS: dict[str, bytes] = {}


@pytest.mark.parametrize(
    ("unit", "encoding"),
    [(b"\n", "br"), (b"\r", "gzip"), (b"\r\n", "zstd"), (b":\n\n", "deflate"), (b"data:x\n\n", "br")],
)
@pytest.mark.parametrize("step", [1 << 30, 65536, 997])
def test_a_bomb_of_lines_stops_at_the_line_bound(unit: bytes, encoding: str, step: int) -> None:
    """Tiny blocks, well within the byte bound (every 56 KiB of them after 1 KiB of random text): the lines are
    bounded per chunk and per response, and what came within the bound is returned, as it came."""
    rng = random.Random(3)
    text = b"".join(
        b": " + rng.randbytes(1024).hex().encode() + b"\n\n" + unit * (56 * 1024 // len(unit)) for _ in range(8)
    )
    body = {"br": brotli.compress, "gzip": gzip.compress, "zstd": zstd.compress, "deflate": zlib.compress}[encoding](
        text
    )
    assert len(text) <= MAX_RATIO * len(body)
    d = Decoder(encoding)
    got = b""
    for i in range(0, len(body), step):
        chunk = body[i : i + step]
        out = d.decode(chunk)
        assert _lines(out) <= LINE_ALLOWANCE + LINES_PER_BYTE * len(chunk)  # per chunk
        got += out
        assert _lines(got) <= LINE_ALLOWANCE + LINES_PER_BYTE * d.consumed  # per response
        if d.error:
            break
    assert d.error.startswith("decodes past the line bound: more than ")
    assert text.startswith(got) and d.produced == len(got) and d.lines == _lines(got)
    assert _lines(got) >= LINE_ALLOWANCE  # (the allowance at least, and what the compressed bytes added)
    assert d.decode(b"\0" * 100) == b"" and d.finish() == b""  # stopped: nothing more


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"\n", b"\r", b"\r\n", b"x", b"abc"]), max_size=400), st.integers(0, 300))
def test_the_cut_is_the_longest_start_within_the_line_room(pieces: list[bytes], room: int) -> None:
    data = b"".join(pieces) * 300  # (longer than a counting step)
    if _lines(data) <= room:
        return
    k = _cut(data, room)
    assert _lines(data[:k]) <= room < _lines(data[: k + 1])


def test_a_line_is_counted_at_each_lf_or_cr_and_a_crlf_once() -> None:
    assert _lines(b"a\nb\nc") == 2 and _lines(b"a\rb\r\r") == 3 and _lines(b"a\r\nb\r\n\r\n") == 3


def test_a_legit_burst_and_a_sustained_high_ratio_pass() -> None:
    """Within the bounds: the allowance's worth at once (2 MiB of 128-byte events: 32 Ki lines), and 64 times the
    compressed size all along."""
    d = Decoder("gzip")
    event = b"data: " + b"p" * 120 + b"\n\n"
    burst = gzip.compress(event * (ALLOWANCE // 128))  # 2 MiB at a ratio of ~400
    assert len(d.decode(burst)) == ALLOWANCE and d.lines == LINE_ALLOWANCE and not d.error
    rng = random.Random(7)
    d = Decoder("zstd")
    for _ in range(200):  # 200 frames at a ratio of about 50
        frame_text = bytes(rng.choice(b"ab") for _ in range(64)) * 60
        assert d.decode(zstd.compress(frame_text, level=19)) == frame_text
    assert not d.error


@pytest.mark.parametrize(
    ("encoding", "body", "why"),
    [
        ("gzip", b"not gzip at all", "does not decode as gzip near byte 15 (Error -3"),
        ("gzip", gzip.compress(b"data: a\n\n", mtime=0) + b"\0\0\0", "does not decode as gzip"),
        ("deflate", zlib.compress(b"data: a\n\n") + b"more", "has bytes after the end of its deflate data"),
        ("deflate", b"\xff\xff\xff\xff", "does not decode as deflate"),
        ("br", brotli.compress(b"data: a\n\n") + b"more", "has bytes after the end of its br data"),
        ("br", b"\xff" * 20, "does not decode as br"),
        ("zstd", b"\x28\xb5\x2f\xfd" + b"\xff" * 20, "does not decode as zstd"),
    ],
)
def test_a_corrupt_body_stops_with_a_reason_and_no_payload(encoding: str, body: bytes, why: str) -> None:
    d = Decoder(encoding)
    d.decode(body)
    assert d.error.startswith(why), d.error
    assert "more" not in d.error and "not gzip" not in d.error  # the reason carries no payload bytes
    assert d.decode(b"x") == b""


@pytest.mark.parametrize(
    ("encoding", "body"), [("br", brotli.compress(b"data: a\n\n")), ("deflate", raw_deflate(b"data: a\n\n"))]
)
def test_bytes_after_the_end_of_a_single_stream_stop_it(encoding: str, body: bytes) -> None:
    out, d = decode_all(encoding, [body, b"more"])
    assert out == b"data: a\n\n"
    assert d.error == f"has bytes after the end of its {encoding} data (at byte {len(body) + 4})"


@pytest.mark.parametrize("cut", [0, 1, 5, -4, -1])
def test_bytes_after_the_end_of_a_brotli_stream_in_the_same_chunk_keep_what_came_before(cut: int) -> None:
    """brotli's decompressor gives nothing of a call that ends the stream with bytes after it: the decoder still
    returns every event before them. ``cut``: where the chunks split the stream (0: one chunk)."""
    body = brotli.compress(BODY, quality=5)
    chunks = [body[:cut], body[cut:] + b"\0 after the end"] if cut else [body + b"\0 after the end"]
    out, d = decode_all("br", chunks)
    assert out == BODY
    assert d.error == f"has bytes after the end of its br data (at byte {len(body) + 15})"


def test_bytes_after_the_end_of_a_long_brotli_stream_keep_what_came_before() -> None:
    """The second decompressor catches up in batches (BROTLI_BEHIND): a stream of 200 KiB compressed, in chunks of
    1000 bytes, the last with bytes after the end."""
    rng = random.Random(5)
    text = b"".join(b"id: %d\ndata: %s\n\n" % (n, rng.randbytes(300).hex().encode()) for n in range(700))
    body = brotli.compress(text, quality=5)
    assert len(body) > 3 * BROTLI_BEHIND
    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    chunks[-1] += b"\0 after the end"
    out, d = decode_all("br", chunks)
    assert out == text and d.error.startswith("has bytes after the end of its br data")


def test_a_brotli_chunk_that_decodes_to_more_than_32_kib_is_returned_whole_at_once() -> None:
    """brotli's decompressor gives out about 32 KiB a call, even when it holds more and needs no input: all that a
    chunk decodes to comes with that chunk, not with the next one."""
    rng = random.Random(6)
    c = brotli.Compressor(quality=5)
    events = [b"id: %d\ndata: %s\n\n" % (n, rng.randbytes(300).hex().encode()) for n in range(600)]
    d = Decoder("br")
    for i in range(0, 600, 200):
        part = b"".join(events[i : i + 200])  # ~120 KiB, flushed: every event of it decodable now
        assert d.decode(c.process(part) + c.flush()) == part
    assert not d.error


def test_what_decoded_before_a_corrupt_brotli_byte_is_returned() -> None:
    c = brotli.Compressor(quality=5)
    head = c.process(BODY) + c.flush()  # every event decodable from these bytes alone
    out, d = decode_all("br", [head + b"\xff" * 64])
    assert out == BODY and d.error.startswith("does not decode as br")


def test_what_decoded_before_a_corrupt_member_is_returned() -> None:
    body = gzip.compress(b"data: a\n\n") + b"\x1f\x8b\x08\x00" + b"\0" * 6 + b"\xff" * 20  # a bad block
    out, d = decode_all("gzip", [body])
    assert out == b"data: a\n\n" and d.error.startswith("does not decode as gzip")


def test_a_zstd_frame_asking_for_a_window_above_8_mib_does_not_decode() -> None:
    big = zstd.compress(
        random.Random(1).randbytes(1 << 20) * 10,
        options={zstd.CompressionParameter.window_log: 26},
    )
    d = Decoder("zstd")
    d.decode(big)
    assert d.error.startswith("does not decode as zstd")


@pytest.mark.parametrize("value", [None, "", "identity", " Identity "])
def test_no_encoding_means_no_decoder(value: str | None) -> None:
    assert decoder_for(value) is None


@pytest.mark.parametrize("value", ["compress", "gzip, br", "br;q=1", "bogus", "exi"])
def test_what_is_not_decoded_is_refused(value: str) -> None:
    with pytest.raises(UnsupportedEncoding):
        decoder_for(value)


def test_the_encodings_decoded() -> None:
    assert {"gzip", "x-gzip", "deflate", "br", "zstd"} == ENCODINGS
    decoder = decoder_for(" GZIP ")
    assert decoder is not None and decoder.encoding == "gzip"


def test_an_empty_body_is_not_truncated() -> None:
    for encoding in ENCODINGS:
        out, d = decode_all(encoding, [b""])
        assert out == b"" and not d.error

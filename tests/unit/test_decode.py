"""The Content-Encoding decoder: every encoding whole, byte by byte and split at random points; its bound; its
stops (corrupt, truncated, trailing bytes); what it refuses."""

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
    ENCODINGS,
    MAX_RATIO,
    Decoder,
    UnsupportedEncoding,
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
        ("br events", lambda: brotli.compress(b"data: x\n\n" * (1 << 20))),
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


def test_a_legit_burst_and_a_sustained_high_ratio_pass() -> None:
    """Within the bound: the allowance's worth at once, and 64 times the compressed size all along."""
    d = Decoder("gzip")
    burst = gzip.compress(b"data: ping\n\n" * (ALLOWANCE // 12))  # ~2 MiB at a ratio of ~400
    assert len(d.decode(burst)) == ALLOWANCE // 12 * 12 and not d.error
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
        ("br", brotli.compress(b"data: a\n\n") + b"more", "does not decode as br"),
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

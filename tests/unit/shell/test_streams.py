"""The stream callables (addon/sse_resume_shell/_streams.py), in process: what they hand mitmproxy, decoding a
compressed body and where it stops, an internal error while relaying; compressed bodies fuzzed."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import logging
import sys
import zlib
from collections.abc import Callable, Iterable
from typing import cast

import brotli
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mitmproxy.test import taddons, tutils

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd  # (what mitmproxy installs before Python 3.14)

from shell_harness import Addon, respond, run, sse_flow
from sse_resume_core._decode import ALLOWANCE, MAX_RATIO


def test_stream_callable_never_returns_empty_bytes() -> None:
    addon = Addon()
    with taddons.context(addon):
        flow = sse_flow()
        asyncio.run(addon.request(flow))
        respond(addon, flow)
        outs = run([b"id: 1\nda", b"ta: x\n\n", b": c", b"\n\n", b""], flow)
    # Nothing to send comes back as an empty iterable: an empty bytes object would end the response.
    got = [out if isinstance(out, bytes) else list(cast(Iterable[bytes], out)) for out in outs]
    assert got == [[], b"id: 1\ndata: x\n\n", [], b": c\n\n", []]


def test_internal_error_while_relaying_loses_nothing(caplog: pytest.LogCaptureFixture) -> None:
    addon = Addon()
    with taddons.context(addon):
        flow = sse_flow()
        asyncio.run(addon.request(flow))
        respond(addon, flow)

        def broken(*args: object) -> None:
            raise RuntimeError("store down")

        addon.store.record = addon.store.record_many = broken
        with caplog.at_level(logging.ERROR):
            outs = run([b"id: 1\ndata: a\n\nid: 2\nda", b"ta: b\n\n", b""], flow)
    assert b"".join(o for o in outs if isinstance(o, bytes)) == b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n"
    assert caplog.text.count("internal error relaying") == 1


def test_gzip_sse_response_is_decoded() -> None:
    import gzip

    addon = Addon()
    body = gzip.compress(b"id: 1\ndata: a\n\n")
    with taddons.context(addon):
        flow = sse_flow()
        asyncio.run(addon.request(flow))
        flow.response = tutils.tresp(content=None)
        flow.response.headers["content-type"] = "text/event-stream"
        flow.response.headers["content-encoding"] = "gzip"
        addon.responseheaders(flow)
        outs = run([body[:7], body[7:], b""], flow)
        assert "content-encoding" not in flow.response.headers
    assert b"".join(o for o in outs if isinstance(o, bytes)) == b"id: 1\ndata: a\n\n"


def test_a_body_that_stops_decoding_is_sent_up_to_there_then_ended_once(caplog: pytest.LogCaptureFixture) -> None:
    addon = Addon()
    with taddons.context(addon):
        flow = sse_flow()
        asyncio.run(addon.request(flow))
        flow.response = tutils.tresp(content=None)
        flow.response.headers["content-type"] = "text/event-stream"
        flow.response.headers["content-encoding"] = "gzip"
        addon.responseheaders(flow)
        assert flow.response.headers["transfer-encoding"] == "chunked"
        assert flow.response.headers["connection"] == "close"
        with caplog.at_level(logging.WARNING):
            outs = run([gzip.compress(b"id: 1\ndata: a\n\nid: 2\nda"), b"not gzip", b"more", b""], flow)
        addon.response(flow)
    assert outs == [b"id: 1\ndata: a\n\n", [b""], [], []]  # the held half event is not sent
    assert caplog.text.count("does not decode as gzip") == 1 and "not gzip" not in caplog.text.replace(
        "does not decode as gzip", ""
    )
    assert flow.comment.startswith("sse-resume: response ended: the gzip body does not decode as gzip near byte")
    assert flow.metadata["sse_resume"]["recorded"] == 1


FUZZ_CAP = 256 * 1024


FUZZ_ADDON = Addon()  # one addon for every example: its history must stay within the caps throughout


def _raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


_COMPRESSED: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "gzip": ("gzip", gzip.compress),
    "gzip members": ("gzip", lambda b: gzip.compress(b[: len(b) // 2]) + gzip.compress(b[len(b) // 2 :])),
    "deflate": ("deflate", zlib.compress),
    "raw deflate": ("deflate", _raw_deflate),
    "br": ("br", lambda b: brotli.compress(b, quality=5)),
    "zstd": ("zstd", lambda b: zstd.compress(b[:7]) + zstd.compress(b[7:])),
}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(list(_COMPRESSED)),
    st.lists(st.binary(max_size=120), min_size=1, max_size=8),
    st.lists(st.integers(min_value=0), max_size=10),
    st.sampled_from(["intact", "truncated", "flipped", "trailing", "bomb"]),
    st.integers(min_value=0),
)
def test_fuzzed_compressed_bodies_through_the_stream_callable(
    form: str, payloads: list[bytes], cuts: list[int], damage: str, where: int
) -> None:
    """Compressed bodies, split anywhere, intact or damaged, through responseheaders and the stream callable.

    Intact: the client gets exactly the events. Damaged: no exception, never a bare b""; what the client gets
    until the response ends is decoded bytes (a prefix of the events, but where a flipped bit changed them before
    a checksum saw it); the end is a chunk b"" returned once, last, within a list; nothing follows it.
    """
    encoding, compress = _COMPRESSED[form]
    text = b"".join(
        b"id: %d\ndata: %s\n\n" % (n, p.replace(b"\r", b"").replace(b"\n", b"")) for n, p in enumerate(payloads)
    )
    body = compress(text)
    if damage == "truncated":
        body = body[: where % len(body)]
    elif damage == "flipped":
        i = where % len(body)
        body = body[:i] + bytes([body[i] ^ (1 << (where % 8))]) + body[i + 1 :]
    elif damage == "trailing":
        body += b"\xff" * (8 + where % 40)  # (fewer might be the start of a header: then the body ends inside it)
    elif damage == "bomb":
        if form not in _BOMBS:
            _BOMBS[form] = compress(b"\0" * 4 * ALLOWANCE)
        body = text = _BOMBS[form]
    points = sorted({c % (len(body) + 1) for c in cuts})
    chunks = [body[a:b] for a, b in itertools.pairwise([0, *points, len(body)]) if body[a:b]]

    async def example() -> list[Iterable[bytes] | bytes]:
        with taddons.context(FUZZ_ADDON) as tctx:
            try:
                flow = sse_flow(f"/compressed/{next(_PATHS)}")
                await FUZZ_ADDON.request(flow)
                flow.response = tutils.tresp(content=None)
                flow.response.headers["content-type"] = "text/event-stream"
                flow.response.headers["content-encoding"] = encoding
                FUZZ_ADDON.responseheaders(flow)
                assert "content-encoding" not in flow.response.headers
                stream = flow.response.stream
                assert callable(stream)
                outs = [stream(chunk) for chunk in [*chunks, b""]]
                FUZZ_ADDON.response(flow)
                return outs
            finally:
                tctx.master._legacy_log_events.uninstall()

    outs = asyncio.run(example())
    sent: list[bytes] = []
    ended = False
    for out in outs:
        assert out != b"" and isinstance(out, bytes | list | tuple), out
        for piece in [out] if isinstance(out, bytes) else cast(Iterable[bytes], out):
            assert not ended, "bytes after the end"
            ended = piece == b""
            sent.append(piece)
    got = b"".join(sent)
    if damage == "intact":
        assert got == text and not ended
    elif damage == "bomb":
        assert ended and got == bytes(len(got)) and len(got) <= ALLOWANCE + MAX_RATIO * len(body)
    elif damage != "flipped":  # (a flipped bit may change what decodes, before a checksum, if any, sees it)
        assert text.startswith(got)
        assert ended or damage == "truncated"


_PATHS = itertools.count()


_BOMBS: dict[str, bytes] = {}

"""The mitmproxy shell, in process: hooks called directly with mitmproxy's test helpers."""

from __future__ import annotations

import asyncio
import gzip
import importlib.util
import itertools
import logging
import sys
import tomllib
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Optional, cast

import brotli
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mitmproxy import contentviews, exceptions, optmanager
from mitmproxy.http import HTTPFlow
from mitmproxy.test import taddons, tflow, tutils

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd  # (what mitmproxy installs before Python 3.14)

import sse_resume_shell
from shell_harness import ADDON, Addon, register_with_deferred, relay_through, respond, run, sse_flow
from sse_resume_core._config import Settings
from sse_resume_core._decode import ALLOWANCE, MAX_RATIO
from sse_resume_shell import _features as features
from sse_resume_shell._features import deferred_errors
from sse_resume_shell._flow import MARK


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


def test_hit_is_answered_in_the_request_hook() -> None:
    addon = Addon()
    with taddons.context(addon):
        relay_through(addon, sse_flow(), [b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n"])
        again = sse_flow(last_event_id="1")
        asyncio.run(addon.request(again))
    assert again.response is not None and again.response.headers["sse-resume"] == "hit"
    assert b"id: 2\ndata: b\n\n" in (again.response.content or b"")
    assert again.metadata["sse_resume"]["outcome"] == "hit"


def test_internal_error_in_a_hook_passes_the_flow_through(caplog: pytest.LogCaptureFixture) -> None:
    addon = Addon()
    with taddons.context(addon):

        async def broken(*args: object) -> None:
            raise RuntimeError("forced")

        addon.resumer.decide = broken
        flow = sse_flow(last_event_id="3")
        with caplog.at_level(logging.ERROR):
            asyncio.run(addon.request(flow))
        assert flow.response is None and flow.request.headers["last-event-id"] == "3"
        assert "internal error on request" in caplog.text and "RuntimeError (message withheld" in caplog.text
        assert "RuntimeError: forced" not in caplog.text  # a message may quote data: only its size is logged


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


def test_a_non_200_sse_response_goes_out_as_it_came() -> None:
    addon = Addon()
    body = gzip.compress(b"data: unavailable\n\n")
    with taddons.context(addon):
        flow = sse_flow(last_event_id="ancient")
        asyncio.run(addon.request(flow))
        flow.response = tutils.tresp(status_code=503, content=None)
        flow.response.headers["content-type"] = "text/event-stream"
        flow.response.headers["content-encoding"] = "gzip"
        flow.response.headers["content-length"] = str(len(body))
        before = list(flow.response.headers.items(multi=True))
        addon.responseheaders(flow)
        stream = flow.response.stream
        assert callable(stream)  # it only copies into the flow's transcript
        outs = [stream(body[:5]), stream(body[5:]), stream(b"")]
        addon.error(flow)
    assert outs == [body[:5], body[5:], []]
    # Content-Encoding and Content-Length kept, no sse-resume header
    assert list(flow.response.headers.items(multi=True)) == before
    assert flow.response.raw_content == body  # whole (compressed, as it came): the flow view decodes it
    assert flow.response.content == b"data: unavailable\n\n"


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


def test_unknown_encoding_passes_through_untouched() -> None:
    addon = Addon()
    with taddons.context(addon):
        flow = sse_flow()
        flow.response = tutils.tresp(content=None)
        flow.response.headers["content-type"] = "text/event-stream"
        flow.response.headers["content-encoding"] = "compress"
        addon.responseheaders(flow)
        assert flow.response is not None and flow.response.stream is True
        assert flow.response.headers["content-encoding"] == "compress"


def test_non_sse_is_not_touched() -> None:
    addon = Addon()
    with taddons.context(addon):
        flow = tflow.tflow(resp=True)
        flow.request.headers["accept-encoding"] = "gzip"
        asyncio.run(addon.request(flow))
        addon.responseheaders(flow)
    assert flow.response is not None and flow.response.stream is False
    assert flow.request.headers["accept-encoding"] == "gzip"


def test_bad_option_at_run_time_is_rolled_back() -> None:
    addon = Addon()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, sse_event_ttl=60)
        assert addon.settings.event_ttl == 60
        with pytest.raises(exceptions.OptionsError, match="sse_event_ttl"):
            tctx.configure(addon, sse_event_ttl=0)
        assert addon.settings.event_ttl == 60 and tctx.options.sse_event_ttl == 60


def test_changing_limits_keeps_history_and_changing_mode_starts_afresh() -> None:
    addon = Addon()
    with taddons.context(addon) as tctx:
        relay_through(addon, sse_flow(), [b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n"])
        tctx.configure(addon, sse_max_event_history=1)
        assert [e.id for e in addon.store.events(next(iter(addon.store)))] == ["2"]
        tctx.configure(addon, sse_support_replay=False)
        assert addon.store.snapshot().events == 0 and addon.store.limits.replay is False


def test_a_replay_response_goes_out_as_made() -> None:
    addon = Addon()
    with taddons.context(addon):
        relay_through(addon, sse_flow(), [b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n"])
        again = sse_flow(last_event_id="1")
        asyncio.run(addon.request(again))
        assert again.response is not None
        body = again.response.content
        addon.responseheaders(again)
        addon.response(again)
    assert again.response.stream is False and again.response.content == body and b"id: 2" in (body or b"")


_header_value = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    st.sampled_from(["", "1", "ancient-id", "x" * 100_000, "é\x00", "2025-06-18", "2024-11-05", "gzip", "br"]),
)
_headers = st.dictionaries(
    st.sampled_from(["last-event-id", "mcp-session-id", "accept", "authorization", "cookie", "mcp-protocol-version"]),
    _header_value,
    max_size=6,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    _headers,
    st.sampled_from(["text/event-stream", "text/event-stream; charset=utf-8", "text/plain", ""]),
    st.sampled_from(["", "gzip", "br", "zstd", "deflate", "bogus"]),
    st.sampled_from(["GET", "POST", "DELETE"]),
    st.lists(st.binary(max_size=300), max_size=10),
    st.booleans(),
)
def test_fuzzed_headers_and_bodies_through_every_hook_never_raise(
    headers: dict[str, str], ctype: str, encoding: str, method: str, chunks: list[bytes], clean_end: bool
) -> None:
    """Arbitrary headers and bodies through request, responseheaders, the stream callable and response/error.

    No exception escapes; no callable returns b"" (it would end an HTTP/1 response); memory stays within the
    history's caps.
    """

    async def example() -> None:  # in a running loop, as in mitmdump (mitmproxy's log handler needs it)
        with taddons.context(FUZZ_ADDON) as tctx:
            try:
                tctx.configure(FUZZ_ADDON, sse_max_history_bytes=FUZZ_CAP, sse_max_sessions=50, sse_max_event_bytes=128)
                flow = tflow.tflow()
                flow.request.method = method
                flow.request.path = "/sse/fuzz"
                for name, value in headers.items():
                    flow.request.headers[name] = value
                await FUZZ_ADDON.request(flow)
                if flow.response is None:
                    flow.response = tutils.tresp(content=None)
                    flow.response.headers["content-type"] = ctype
                    if encoding:
                        flow.response.headers["content-encoding"] = encoding
                    FUZZ_ADDON.responseheaders(flow)
                    stream = flow.response.stream
                    if callable(stream):
                        for chunk in [*chunks, b""] if clean_end else chunks:
                            out = stream(chunk)
                            assert out != b"" and isinstance(out, bytes | list | tuple), out
                (FUZZ_ADDON.response if clean_end else FUZZ_ADDON.error)(flow)
            finally:
                tctx.master._legacy_log_events.uninstall()  # as Master.done would: the loop ends here

    asyncio.run(example())
    snap = FUZZ_ADDON.store.snapshot()
    assert snap.bytes <= FUZZ_CAP and snap.sessions <= 50


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


def test_long_store_secrets_key_the_session_digests() -> None:
    """A secret of any length (BLAKE2b keys stop at 64 bytes) keys session keys; two proxies agree on them."""
    keys = []
    for _ in range(2):
        addon = Addon()
        with taddons.context(addon) as tctx:
            tctx.configure(addon, sse_store="redis://127.0.0.1:1/0", sse_store_secret="s" * 4000)
            keys.append(addon.shell.session_of(sse_flow().request))
    assert keys[0] == keys[1]
    other = Addon()
    with taddons.context(other) as tctx:
        tctx.configure(other, sse_store="redis://127.0.0.1:1/0", sse_store_secret="another")
        assert other.shell.session_of(sse_flow().request) != keys[0]


def test_credential_headers_and_the_option_make_the_session() -> None:
    """The shell hands every header to the core's identity rule, and the option's patterns with it."""

    def session(addon: object, headers: dict[str, str]) -> str:
        flow = sse_flow()
        for name, value in headers.items():
            flow.request.headers[name] = value
        return addon.shell.session_of(flow.request)  # type: ignore[attr-defined,no-any-return]

    addon = Addon()
    with taddons.context(addon) as tctx:
        alice = session(addon, {"X-API-Key": "alice"})
        assert alice == session(addon, {"x-api-key": "alice", "user-agent": "other"})
        assert alice != session(addon, {"X-API-Key": "mallory"}) != session(addon, {})
        assert session(addon, {"X-Zone": "a"}) == session(addon, {"X-Zone": "b"})
        tctx.configure(addon, sse_identity_headers=["x-zone", "!x-api-key"])
        assert session(addon, {"X-Zone": "a"}) != session(addon, {"X-Zone": "b"})
        assert session(addon, {"X-API-Key": "alice"}) == session(addon, {"X-API-Key": "mallory"})
        with pytest.raises(exceptions.OptionsError, match="sse_identity_headers"):
            tctx.configure(addon, sse_identity_headers=["x tenant"])


# -- what the addon shows: the SSE content view, flow annotations, commands and metrics ----------------------


def test_content_view_is_selected_for_event_streams() -> None:
    addon = Addon()
    with taddons.context(addon):
        flow = sse_flow()
        relay_through(addon, flow, [b'id: 1\ndata: {"a": [1, 2]}\n\n'])
        assert flow.response is not None
        result = contentviews.prettify_message(flow.response, flow)
    assert result.view_name == "SSE"
    assert result.text == '#1  id: 1\n{\n  "a": [\n    1,\n    2\n  ]\n}'


def test_transcript_lands_on_the_flow_after_a_clean_end_and_after_a_disconnect() -> None:
    addon = Addon()
    with taddons.context(addon):
        clean, cut = sse_flow("/a"), sse_flow("/b")
        relay_through(addon, clean, [b"id: 1\ndata: a\n\n", b"id: 2\ndata: b\n\n"])
        relay_through(addon, cut, [b"id: 1\ndata: a\n\nid: 2\nda"], end=False)
    assert clean.response is not None and clean.response.raw_content == b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n"
    assert cut.response is not None and cut.response.raw_content == b"id: 1\ndata: a\n\n"
    assert cut.metadata["sse_resume"]["recorded"] == 1


def test_annotations_for_hit_miss_and_duplicates() -> None:
    addon = Addon()
    with taddons.context(addon):
        relay_through(addon, sse_flow(), [b"".join(b"id: %d\ndata: %d\n\n" % (n, n) for n in range(1, 6))])
        hit = sse_flow(last_event_id="2")
        asyncio.run(addon.request(hit))
        miss = sse_flow(last_event_id="ancient-id")
        relay_through(addon, miss, [b"id: 1\ndata: x\n\n"])
        dup = sse_flow(last_event_id="5")
        relay_through(addon, dup, [b"".join(b"id: %d\ndata: %d\n\n" % (n, n) for n in range(1, 8))])
    assert hit.comment == "sse-resume: served 3 events from history after id '2'"
    assert hit.marked == MARK
    assert hit.metadata["sse_resume"]["outcome"] == "hit" and hit.metadata["sse_resume"]["replayed"] == 3
    assert miss.comment == "sse-resume: Last-Event-ID 'ancient-id' unknown: forwarded upstream"
    assert miss.marked == MARK
    assert dup.comment == "sse-resume: resumed upstream after id '5' (nothing newer held); 5 duplicate events dropped"
    assert dup.metadata["sse_resume"]["duplicates"] == 5
    # After the hit, the client's next stream restores the retry the replay shortened (no upstream retry: 3000).
    assert dup.response is not None
    assert dup.response.raw_content == b"retry: 3000\n\nid: 6\ndata: 6\n\nid: 7\ndata: 7\n\n"


def test_a_fresh_stream_is_not_marked() -> None:
    addon = Addon()
    with taddons.context(addon):
        flow = sse_flow()
        relay_through(addon, flow, [b"id: 1\ndata: a\n\n"])
    assert not flow.marked and not flow.comment
    assert flow.metadata["sse_resume"]["outcome"] == "fresh"


def test_commands() -> None:
    addon = Addon()
    with taddons.context(addon) as tctx:
        relay_through(addon, sse_flow("/one"), [b"id: 1\ndata: a\n\nid: 2\ndata: bb\n\n"])
        relay_through(addon, sse_flow("/two"), [b"id: x\ndata: c\n\n"])
        sessions = tctx.command(addon.sessions_command).splitlines()
        assert sessions[0].split() == ["session", "streams", "events", "bytes", "age", "s", "idle", "s"]
        assert sorted(int(row.split()[2]) for row in sessions[1:]) == [1, 2]
        key = next(row.split()[0] for row in sessions[1:] if row.split()[2] == "2")
        history = tctx.command(addon.history_command, key[:8]).splitlines()
        assert [row.split()[-1] for row in history[1:]] == ["'1'", "'2'"]
        assert [int(row.split()[-2]) for row in history[1:]] == [15, 16]
        stats = dict(line.split(": ", 1) for line in tctx.command(addon.stats_command).splitlines())
        assert (stats["sessions"], stats["events"], stats["stored"]) == ("2", "3", "3")
        with pytest.raises(exceptions.CommandError, match="no session matches"):
            tctx.command(addon.history_command, "zzzz")
        assert tctx.command(addon.clear_command, key) == "cleared 1 session"
        assert tctx.command(addon.clear_command) == "cleared 1 session"
        assert addon.store.snapshot().sessions == 0


def test_non_sse_flows_get_no_annotation() -> None:
    addon = Addon()
    with taddons.context(addon):
        flow = tflow.tflow()
        asyncio.run(addon.request(flow))
        flow.response = tutils.tresp()
        addon.responseheaders(flow)
        addon.response(flow)
    assert "sse_resume" not in flow.metadata and not flow.comment


# -- options: wrong types, unknown names, config.yaml's sse: block, optional packages, effective settings ---------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("sse_event_ttl=5x", "Failed to parse option sse_event_ttl: not an integer: 5x"),
        ("sse_max_event_history=abc", "Failed to parse option sse_max_event_history: not an integer: abc"),
        ("sse_support_replay=maybe", 'Failed to parse option sse_support_replay: boolean must be "true", "false"'),
        ("sse_session_header", "Option is required: sse_session_header"),  # a str option given no value
        ("sse_event_tll=5", "sse_event_tll: no such option (did you mean sse_event_ttl?)"),
    ],
)
def test_a_wrong_set_value_is_an_error_naming_it_and_the_others_apply(
    spec: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    addon = Addon()
    with taddons.context() as tctx, caplog.at_level(logging.ERROR):
        register_with_deferred(tctx, addon, spec, "sse_dedupe_window=7")
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and errors[0].startswith(f"sse-resume: invalid option: {message}")
        assert addon.settings.dedupe_window == 7  # the good value was applied, and the addon is configured
        assert not any(name.startswith("sse_") for name in tctx.options.deferred)


def test_multiple_values_for_an_optional_option_are_an_error(caplog: pytest.LogCaptureFixture) -> None:
    addon = Addon()
    with taddons.context() as tctx, caplog.at_level(logging.ERROR):
        register_with_deferred(tctx, addon, "sse_config=a.yaml", "sse_config=b.yaml")
    assert [r.getMessage() for r in caplog.records] == [
        "sse-resume: invalid option: Received multiple values for sse_config: ['a.yaml', 'b.yaml']"
    ]


def test_wrong_types_from_config_yaml_are_errors_without_their_values(caplog: pytest.LogCaptureFixture) -> None:
    addon = Addon()
    with taddons.context() as tctx, caplog.at_level(logging.ERROR):
        register_with_deferred(
            tctx, addon, sse_event_ttl="5x", sse_support_replay="maybe", sse_store_secret=12345, sse_config=["x"]
        )
    errors = sorted(r.getMessage() for r in caplog.records)
    assert len(errors) == 4
    for error, name in zip(
        errors, ["sse_config", "sse_event_ttl", "sse_store_secret", "sse_support_replay"], strict=True
    ):
        assert error.startswith(f"sse-resume: invalid option: {name}: Expected ") and "config.yaml" in error
    assert "12345" not in "".join(errors)


def test_a_sequence_option_given_a_string_is_an_error() -> None:
    """The check covers every kind of option mitmproxy has, sequences too (none of ours is one yet)."""
    options = mitmproxy_options()
    options.update_defer(sse_names="authorization", sse_count="3")  # from config.yaml, before the addon loads
    options.add_option("sse_names", Sequence[str], [], "names")
    options.add_option("sse_count", Optional[int], None, "count")  # noqa: UP045 (mitmproxy wants typing.Optional)
    errors = sorted(deferred_errors(options, ["sse_names", "sse_count"]))
    assert [e.split(": ")[0] for e in errors] == ["sse_count", "sse_names"]
    assert all("config.yaml" in e for e in errors) and not options.deferred
    options = mitmproxy_options()
    options.set("sse_names=a", "sse_names=b", defer=True)  # from --set: always a list of strings, fine
    options.update_defer(sse_count=None)
    options.add_option("sse_names", Sequence[str], [], "names")
    options.add_option("sse_count", Optional[int], None, "count")  # noqa: UP045
    assert deferred_errors(options, ["sse_names", "sse_count"]) == []
    options.process_deferred()
    assert options.sse_names == ["a", "b"]


def mitmproxy_options() -> optmanager.OptManager:
    from mitmproxy import options

    return options.Options()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("sse_event_ttl", "5x"),
        ("sse_support_replay", "maybe"),
        ("sse_max_event_history", "abc"),
        ("sse_event_ttl", "0"),
    ],
)
def test_wrong_values_at_run_time_are_refused_and_the_old_value_kept(option: str, value: str) -> None:
    addon = Addon()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, sse_event_ttl=60, sse_support_replay=False, sse_max_event_history=50)
        before = addon.settings
        with pytest.raises(exceptions.CommandError, match=option):
            tctx.master.commands.execute(f"set {option} {value}")  # what mitmproxy's console and mitmweb run
        assert addon.settings == before
        assert (tctx.options.sse_event_ttl, tctx.options.sse_support_replay) == (60, False)
        assert tctx.options.sse_max_event_history == 50


def test_config_yaml_sse_block_is_applied_below_the_file_and_options(tmp_path: Path) -> None:
    file = tmp_path / "sse.yaml"
    file.write_text("sse:\n  stale_policy: restart\n")
    addon = Addon()
    block = {"client_resilience": {"event_ttl": 60, "max_event_history": 10}, "stale_policy": "forward"}
    with taddons.context() as tctx:
        register_with_deferred(tctx, addon, "sse_max_event_history=20", f"sse_config={file}", sse=block)
        s = addon.settings
        assert (s.event_ttl, s.max_event_history, s.stale_policy) == (60, 20, "restart")
        assert addon.sources["event_ttl"] == "config.yaml sse:" and addon.sources["stale_policy"] == "sse_config file"
        assert addon.sources["max_event_history"] == "option" and addon.sources["dedupe_window"] == "default"


@pytest.mark.parametrize(
    ("block", "message"), [({"event_ttl": 0}, "config.yaml: sse.event_ttl: Input"), ({"ttl": 5}, "unknown setting")]
)
def test_a_bad_config_yaml_sse_block_names_its_source(
    caplog: pytest.LogCaptureFixture, block: dict[str, object], message: str
) -> None:
    # At startup (the configure that follows the load) the error is one logged line, which stops mitmproxy.
    with taddons.context() as tctx, caplog.at_level(logging.ERROR):
        register_with_deferred(tctx, Addon(), sse=block)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith("sse-resume: invalid option: config.yaml: "), errors
    assert message in errors[0] and "Traceback" not in caplog.text


def test_an_invalid_value_at_startup_is_one_logged_line_and_the_addon_keeps_its_defaults(
    caplog: pytest.LogCaptureFixture,
) -> None:
    addon = Addon()
    with taddons.context() as tctx, caplog.at_level(logging.ERROR):
        register_with_deferred(tctx, addon, "sse_event_ttl=0", "sse_stale_policy=foo")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and all(e.startswith("sse-resume: invalid option: ") for e in errors), errors
    assert addon.settings == Settings()  # nothing of the invalid configuration was applied


def hide_module(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make ``import name`` fail as it does where the package is not installed."""
    for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".") or m.startswith("sse_resume_redis")]:
        monkeypatch.delitem(sys.modules, loaded)
    monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize(
    ("option", "value", "module", "requirement"),
    [
        ("sse_store", "redis://127.0.0.1:1/0", "redis", "redis>=5.0"),
        ("sse_metrics_port", 1, "prometheus_client", "prometheus-client>=0.20"),
    ],
)
def test_a_missing_package_is_an_option_error_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch, option: str, value: object, module: str, requirement: str
) -> None:
    hide_module(monkeypatch, module)
    addon = Addon()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, sse_event_ttl=60)  # everything else works without the package
        with pytest.raises(exceptions.OptionsError) as info:
            tctx.configure(addon, **{option: value})
        assert addon.settings.event_ttl == 60 and addon.settings.store == "memory" and addon.settings.metrics_port == 0
    message = str(info.value)
    assert message.startswith(f"{option}: ") and f"needs the Python package {requirement}" in message
    assert message.endswith(f"install it with: {features.install_command(requirement)}")


def test_install_command_fits_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "mitmproxy"))
    monkeypatch.setattr(sys, "executable", "/opt/my python/bin/python")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    assert features.install_command("redis>=5.0") == "'/opt/my python/bin/python' -m pip install 'redis>=5.0'"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert features.install_command("redis>=5.0") == "uv pip install --python '/opt/my python/bin/python' 'redis>=5.0'"
    (tmp_path / "mitmproxy").mkdir()
    (tmp_path / "mitmproxy" / "pipx_metadata.json").write_text("{}")
    assert features.install_command("redis>=5.0") == "pipx inject mitmproxy 'redis>=5.0'"


def test_optional_packages_are_the_projects_extras() -> None:
    project = tomllib.loads((ADDON.parents[1] / "pyproject.toml").read_text())["project"]
    extras = {req for reqs in project["optional-dependencies"].values() for req in reqs}
    for _, requirement, _ in features.FEATURES.values():
        assert requirement in extras and requirement not in project["dependencies"]


def test_settings_command_and_startup_line_hide_secrets(caplog: pytest.LogCaptureFixture) -> None:
    addon = Addon()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, sse_event_ttl=60, sse_store_secret="hunter2")
        rows = {row.split()[0]: row.split()[1:] for row in tctx.command(addon.settings_command).splitlines()[1:]}
        assert rows["sse_event_ttl"] == ["60", "option"] and rows["sse_dedupe_window"] == ["100", "default"]
        assert rows["sse_store_secret"] == ["(set)", "option"] and rows["sse_config"] == ["(unset)", "option"]
        assert set(rows) == {f"sse_{name}" for name in Settings.model_fields} | {"sse_config"}

        async def start() -> None:
            with caplog.at_level(logging.INFO, "sse_resume"):
                addon.running()
            await addon.done()

        asyncio.run(start())
    lines = [r.getMessage() for r in caplog.records if "settings" in r.getMessage()]
    assert lines == [
        "sse-resume: settings: sse_event_ttl=60 (option), sse_store_secret=(set) (option); every other at its "
        "default (the command sse.settings lists all)"
    ]
    assert "hunter2" not in caplog.text


# -- live flows, transcripts of streams passed through, readable commands --------------------------------------


class UpdateRecorder:
    """Records the flows of each update hook (what mitmweb's and the console's view react to)."""

    def __init__(self) -> None:
        self.updates: list[list[str]] = []

    def update(self, flows: Sequence[HTTPFlow]) -> None:
        self.updates.append([f.id for f in flows])


def test_an_open_flow_shows_its_events_once_a_refresh_comes_and_only_when_they_changed() -> None:
    addon, seen = Addon(), UpdateRecorder()
    with taddons.context(addon, seen) as tctx:
        tctx.configure(addon, sse_live_flows="on")
        addon.shell.live = addon._wants_live()
        flow = sse_flow()
        asyncio.run(addon.request(flow))
        respond(addon, flow)
        run([b"id: 1\ndata: a\n\n", b"id: 2\ndata: b\n\n"], flow)
        assert flow.response is not None and flow.response.raw_content is None
        addon.resumer.flush()  # (the flush timer's work)
        addon._refresh_live()
        assert flow.response.raw_content == b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n"
        assert seen.updates == [[flow.id]]
        addon._refresh_live()  # nothing new: no update
        assert seen.updates == [[flow.id]]
        run([b"id: 3\ndata: c\n\n"], flow)
        addon.resumer.flush()
        addon._refresh_live()
        assert (flow.response.raw_content or b"").endswith(b"id: 3\ndata: c\n\n") and len(seen.updates) == 2
        addon.error(flow)
    assert flow.response.raw_content == b"id: 1\ndata: a\n\nid: 2\ndata: b\n\nid: 3\ndata: c\n\n"
    assert addon.transcript_budget.total == 0  # the finished flow's transcript no longer counts


def test_live_flows_auto_is_on_where_a_view_shows_flows() -> None:
    from mitmproxy.addons.view import View

    addon = Addon()
    with taddons.context(addon) as tctx:
        assert not addon._wants_live()  # (mitmdump: no view)
        tctx.configure(addon, sse_live_flows="on")
        assert addon._wants_live()
    addon = Addon()
    with taddons.context(addon, View()) as tctx:
        assert addon._wants_live()  # mitmweb, the console
        tctx.configure(addon, sse_live_flows="off")
        assert not addon._wants_live()


def test_a_resume_is_said_on_the_flow_when_decided_once_and_with_both_last_event_ids() -> None:
    addon = Addon()
    with taddons.context(addon):
        relay_through(addon, sse_flow(), [b"".join(b"id: %d\ndata: %d\n\n" % (n, n) for n in range(1, 6))])
        flow = sse_flow(last_event_id="5")
        flow.comment = "the user's own note"
        asyncio.run(addon.request(flow))
        # Decided: said at once, before any byte came back (the flow is open in the view).
        decided = "sse-resume: resumed upstream after id '5' (nothing newer held)"
        assert flow.comment == f"the user's own note\n{decided}"
        assert flow.metadata["sse_resume"]["client_last_event_id"] == "'5'"
        respond(addon, flow)
        run([b"id: 6\ndata: 6\n\n", b""], flow)
        addon.response(flow)
        assert flow.comment == f"the user's own note\n{decided}"  # said once, not twice
        inline = sse_flow(last_event_id="2")
        inline.request.headers["accept"] = "*/*"
        asyncio.run(addon.request(inline))
    assert inline.marked == MARK
    assert inline.comment == (
        "sse-resume: served 4 events from history after id '2', then the live stream; "
        "client's Last-Event-ID '2', sent upstream as '6'"
    )
    facts = inline.metadata["sse_resume"]
    assert (facts["client_last_event_id"], facts["upstream_last_event_id"]) == ("'2'", "'6'")


def test_a_stream_of_an_mcp_version_without_resumption_passes_untouched_with_a_transcript() -> None:
    addon = Addon()
    body = [b"id: 1\ndata: a\n\n", b"id: 1\ndata: a\n\n", b"data: b"]  # (a repeat too: nothing is dropped)
    with taddons.context(addon):
        flow = sse_flow(last_event_id="1")
        flow.request.headers["mcp-protocol-version"] = "2026-07-28"
        before = list(flow.request.headers.items(multi=True))
        asyncio.run(addon.request(flow))
        assert list(flow.request.headers.items(multi=True)) == before
        respond(addon, flow)
        assert flow.response is not None and "sse-resume" not in flow.response.headers
        outs = run([*body, b""], flow)
        addon.response(flow)
    assert outs == [*body, []]
    assert flow.response.raw_content == b"".join(body)
    assert flow.metadata["sse_resume"] == {"outcome": "passed", "passthrough": "MCP 2026-07-28: nothing to resume"}
    assert not flow.comment and not flow.marked


def test_commands_in_mitmweb_answer_one_line_and_log_their_table(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    addon = Addon()
    caplog.set_level(logging.INFO, "sse_resume")
    with taddons.context(addon) as tctx:
        assert tctx.command(addon.history_command) == "no session held"  # (the console: as it is)
        relay_through(addon, sse_flow("/one"), [b"id: 1\ndata: a\n\nid: 2\ndata: bb\n\n"])
        table = tctx.command(addon.history_command).splitlines()  # the only session: no argument needed
        assert [row.split()[-1] for row in table[1:]] == ["'1'", "'2'"]
        monkeypatch.setattr(sse_resume_shell._commands, "_in_web", lambda: True)
        key = next(iter(addon.store))[:12]
        caplog.clear()
        assert tctx.command(addon.sessions_command) == f"1 session held: {key} (the table is in the event log)"
        logged = caplog.records[-1].getMessage().splitlines()
        assert logged[0] == "sse.sessions" and logged[1].split()[:2] == ["session", "streams"]
        assert logged[2].startswith(key)
        answer = tctx.command(addon.history_command)
        assert answer == f"session {key}: 2 events held, ids '1' to '2' (the table is in the event log)"
        assert tctx.command(addon.stats_command).startswith("sessions 1, events 2, hits 0, misses 0")
        relay_through(addon, sse_flow("/two"), [b"id: x\ndata: c\n\n"])
        assert tctx.command(addon.history_command).startswith("2 sessions held: name one, sse.history KEY")
        assert "\n" not in tctx.command(addon.settings_command)


@pytest.mark.parametrize(("version", "framing"), [("HTTP/1.1", "chunked"), ("HTTP/2.0", None), ("HTTP/1.0", None)])
def test_a_length_the_upstream_gave_is_not_passed_on(version: str, framing: str | None) -> None:
    """The addon may put bytes in front or drop duplicates, so the client's body is not the upstream's length."""
    addon = Addon()
    with taddons.context(addon):
        flow = sse_flow(last_event_id="ancient")
        flow.request.http_version = version
        asyncio.run(addon.request(flow))
        flow.response = tutils.tresp(content=None)
        flow.response.headers["content-type"] = "text/event-stream"
        flow.response.headers["content-length"] = "15"
        addon.responseheaders(flow)
        outs = run([b"id: 1\ndata: a\n\n", b""], flow)
    assert "content-length" not in flow.response.headers
    assert flow.response.headers.get("transfer-encoding") == framing
    assert (flow.response.headers.get("connection") == "close") == (version == "HTTP/1.0")
    assert outs[0] == b": sse-resume: Last-Event-ID unknown: forwarded upstream; continuity not guaranteed\n\n" + (
        b"id: 1\ndata: a\n\n"
    )

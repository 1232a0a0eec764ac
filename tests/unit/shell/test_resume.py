"""The resume hooks (addon/sse_resume_shell/_resume.py), in process: hits answered in the request hook, what is
left alone (non-SSE, non-200, unknown encodings, replays, MCP versions without resumption, MCP's legacy
transport), the flow said at its end; headers and bodies fuzzed through every hook."""

from __future__ import annotations

import asyncio
import gzip
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mitmproxy.test import taddons, tflow, tutils

from shell_harness import Addon, relay_through, respond, run, sse_flow


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


FUZZ_CAP = 256 * 1024
FUZZ_ADDON = Addon()  # one addon for every example: its history must stay within the caps throughout


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


def test_transcript_lands_on_the_flow_after_a_clean_end_and_after_a_disconnect() -> None:
    addon = Addon()
    with taddons.context(addon):
        clean, cut = sse_flow("/a"), sse_flow("/b")
        relay_through(addon, clean, [b"id: 1\ndata: a\n\n", b"id: 2\ndata: b\n\n"])
        relay_through(addon, cut, [b"id: 1\ndata: a\n\nid: 2\nda"], end=False)
    assert clean.response is not None and clean.response.raw_content == b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n"
    assert cut.response is not None and cut.response.raw_content == b"id: 1\ndata: a\n\n"
    assert cut.metadata["sse_resume"]["recorded"] == 1


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


def test_version_without_resumption_passes_untouched() -> None:
    addon = Addon()
    with taddons.context(addon):
        flow = sse_flow(last_event_id="7")
        flow.request.headers["mcp-protocol-version"] = "2026-07-28"
        flow.request.headers["accept-encoding"] = "gzip"
        asyncio.run(addon.request(flow))
        assert flow.request.headers["last-event-id"] == "7" and flow.request.headers["accept-encoding"] == "gzip"
        respond(addon, flow)
        assert flow.response is not None and callable(stream := flow.response.stream)
        chunk = b"id: 1\ndata: x\n\n"
        assert stream(chunk) == chunk  # streamed as it came, copied into the flow's transcript, not interpreted
        addon.response(flow)
    assert addon.store.snapshot().events == 0 and flow.metadata["sse_resume"]["outcome"] == "passed"


def test_legacy_http_sse_stream_passes_untouched() -> None:
    addon = Addon()
    legacy = b"event: endpoint\r\ndata: /messages/?session_id=abc\r\n\r\n"
    with taddons.context(addon):
        flow = sse_flow("/sse")
        asyncio.run(addon.request(flow))
        respond(addon, flow)
        outs = run([legacy[:10], legacy[10:], b"event: message\r\ndata: {}\r\n\r\n", b""], flow)
        addon.response(flow)
    assert b"".join(o for o in outs if isinstance(o, bytes)) == legacy + b"event: message\r\ndata: {}\r\n\r\n"
    assert addon.store.snapshot().stored == 0
    assert flow.metadata["sse_resume"]["passthrough"].startswith("legacy MCP HTTP+SSE")

"""The stream callables the resume hooks give mitmproxy: the relay's own, one that decodes a compressed body
first, and one that only keeps a transcript of a stream passed through. None of them lets an error out."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterable

from sse_resume_core._decode import Decoder
from sse_resume_core._logsafe import safe_traceback
from sse_resume_core._resume import Relay
from sse_resume_core._view import Transcript, TranscriptBudget
from sse_resume_shell._flow import FlowState

__all__ = ["StreamCallable", "copying", "relaying"]

log = logging.getLogger("sse_resume")

StreamCallable = Callable[[bytes], Iterable[bytes] | bytes]


def copying(state: FlowState, why: str, transcript_bytes: int, budget: TranscriptBudget) -> StreamCallable | bool:
    """The stream callable of a response passed through untouched: it only keeps a transcript (bounded)."""
    state.passed = why
    if not transcript_bytes:
        return True
    transcript = state.copy = Transcript(transcript_bytes, budget)

    def copy(chunk: bytes) -> Iterable[bytes] | bytes:
        if not chunk:
            return []  # (an empty bytes object would end an HTTP/1 response early: this is the end anyway)
        with contextlib.suppress(Exception):  # (not expected: the bytes pass on whatever happens)
            transcript.add(chunk)
        return chunk

    return copy


def relaying(flow_id: str, state: FlowState, decoder: Decoder | None, ends: bool = False) -> StreamCallable:
    """The stream callable of the flow's relay (``state.relay``), decoding the body first when ``decoder``."""
    relay = state.relay
    assert relay is not None
    relay.on_failure = functools.partial(_log_failure, flow_id, state)
    if decoder is None:
        return relay.pipe  # one call per chunk, nothing in between: the relay's hot path
    end: list[bytes] = [b""] if ends else []  # an empty chunk ends a chunked HTTP/1 response

    def decoded(chunk: bytes) -> Iterable[bytes] | bytes:
        if state.stopped:
            return []  # the response has ended: the rest of the body is dropped, undecoded
        try:
            data = decoder.decode(chunk) if chunk else decoder.finish()
            out = relay.feed(data) if data else b""
            if decoder.error:
                return _stop_decoding(flow_id, state, decoder, out, end, chunk)
            if not chunk:
                out += relay.close()
            return out if out else []  # an empty bytes object would end an HTTP/1 response
        except Exception as e:  # not expected (the decoder and the relay do not raise): end the response
            log.error("sse-resume: internal error decoding %s; the response ends here\n%s", flow_id, safe_traceback(e))
            state.stopped = "internal error"
            state.failed = True
            return end

    return decoded


def _stop_decoding(
    flow_id: str, state: FlowState, decoder: Decoder, out: bytes, end: list[bytes], chunk: bytes
) -> list[bytes]:
    """The body does not decode, or decodes past its bound: what decoded before is sent, then the end.

    (A body that ended inside compressed data has ended anyway: that is only said.)"""
    relay = state.relay
    assert relay is not None
    if not chunk:  # the clean end of a truncated body: all it held was decoded and relayed
        log.info("sse-resume: %s: the %s body %s", flow_id, decoder.encoding, decoder.error)
        out += relay.close()
        return [out] if out else []
    log.warning(
        "sse-resume: %s: the %s body %s; the response ends here (%d bytes decoded)",
        flow_id,
        decoder.encoding,
        decoder.error,
        decoder.produced,
    )
    state.stopped = f"the {decoder.encoding} body {decoder.error}"
    relay.flush()  # the events relayed are history; an event cut short is not sent
    return [out, *end] if out else end


def _log_failure(flow_id: str, state: FlowState, relay: Relay) -> None:
    """Say once per flow that the relay failed (it passes everything through from then on)."""
    state.failed = True
    log.error(
        "sse-resume: internal error relaying %s (session %s); passing the rest through%s",
        flow_id,
        state.session[:12],
        "\n" + safe_traceback(relay.failed) if relay.failed is not None else "",
    )

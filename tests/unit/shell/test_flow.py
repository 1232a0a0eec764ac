"""A flow's state and the small words of the shell (addon/sse_resume_shell/_flow.py): which messages are event
streams, the addon's sentence in the flow's comment (after the user's own words, replaced when it says more), ids
as the flow view shows them."""

from __future__ import annotations

import asyncio

from mitmproxy.test import taddons, tflow, tutils

from shell_harness import Addon, relay_through, respond, run, sse_flow
from sse_resume_shell._flow import MARK, FlowState, is_sse, say, show_id, wants_sse


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


def test_an_event_stream_is_told_by_its_content_type_in_any_case_with_parameters() -> None:
    response = tutils.tresp(content=None)
    response.headers["content-type"] = "Text/Event-Stream; charset=utf-8"
    assert is_sse(response)
    response.headers["content-type"] = "text/plain"
    assert not is_sse(response) and not is_sse(None)
    del response.headers["content-type"]
    assert not is_sse(response)


def test_a_request_wants_a_stream_when_it_accepts_one_or_resumes() -> None:
    request = tutils.treq()
    assert not wants_sse(request)
    request.headers["accept"] = "application/json, TEXT/EVENT-STREAM"
    assert wants_sse(request)
    resuming = tutils.treq()
    resuming.headers["last-event-id"] = "7"
    assert wants_sse(resuming)


def test_the_addons_sentence_replaces_its_last_one_and_keeps_the_users_words() -> None:
    flow, state = tflow.tflow(), FlowState("s")
    say(flow, state, "first")
    assert flow.comment == "first"
    say(flow, state, "second")
    assert flow.comment == "second"
    flow.comment += "\nthe user's words after it"
    say(flow, state, "third")  # the user wrote after the addon's sentence: it stays, the new one follows
    assert flow.comment == "second\nthe user's words after it\nthird"


def test_an_id_is_shown_quoted_escaped_and_shortened() -> None:
    assert show_id(None) == "(none)"
    assert show_id("42") == "'42'" and show_id("a\nb") == "'a\\nb'"
    long = show_id("x" * 100)
    assert long.startswith("'xxx") and long.endswith("...'") and len(long) == 40  # the limit, exactly
    assert len(show_id("x" * 39)) == 40 and show_id("x" * 39).endswith("...'")  # 41 characters: shortened
    assert show_id("x" * 38) == "'" + "x" * 38 + "'"  # 40 characters: whole

"""A flow's state and what is said on it (addon/sse_resume_shell/_flow.py): the sentence goes after the user's own
comment, once, when the resume is decided."""

from __future__ import annotations

import asyncio

from mitmproxy.test import taddons

from shell_harness import Addon, relay_through, respond, run, sse_flow
from sse_resume_shell._flow import MARK


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

"""What a flow says of its resume (addon/sse_resume_shell/_annotate.py): marks and metadata for hits, misses
and duplicates, none for fresh streams and other flows."""

from __future__ import annotations

import asyncio

from mitmproxy.test import taddons, tflow, tutils

from shell_harness import Addon, relay_through, sse_flow
from sse_resume_shell._flow import MARK


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


def test_non_sse_flows_get_no_annotation() -> None:
    addon = Addon()
    with taddons.context(addon):
        flow = tflow.tflow()
        asyncio.run(addon.request(flow))
        flow.response = tutils.tresp()
        addon.responseheaders(flow)
        addon.response(flow)
    assert "sse_resume" not in flow.metadata and not flow.comment

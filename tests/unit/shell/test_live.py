"""Live flows (addon/sse_resume_shell/_live.py): an open flow shows its events once a refresh comes, where a view
shows flows."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from mitmproxy.http import HTTPFlow
from mitmproxy.test import taddons

from shell_harness import Addon, respond, run, sse_flow

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

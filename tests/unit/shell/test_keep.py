"""Keep mode's side in mitmproxy (addon/sse_resume_shell/_keep.py), in process: the keeper runs while the option
asks for it, which requests are routed to it and how, what the flow shows afterwards, and the URLs it learns."""

from __future__ import annotations

import asyncio

from mitmproxy.test import taddons, tutils

from shell_harness import Addon, sse_flow
from sse_resume_keep import TICKET_HEADER
from sse_resume_shell._flow import FlowState
from sse_resume_shell._keep import MAX_ENDPOINTS, SSEKeep


def keep_of(addon: Addon) -> SSEKeep:
    return next(a for a in addon.addons if isinstance(a, SSEKeep))


def test_the_keeper_runs_while_the_option_is_on_and_stops_when_it_goes_off() -> None:
    async def scenario() -> None:
        addon = Addon()
        with taddons.context(addon) as tctx:
            addon.running()
            assert addon.shell.keeper is None
            tctx.configure(addon, sse_keep_upstream=True)
            keeper = addon.shell.keeper
            assert keeper is not None and keeper.port > 0
            tctx.configure(addon, sse_keep_grace=3)  # another sse_ option: the same keeper, reconfigured
            assert addon.shell.keeper is keeper and keeper.settings.grace == 3.0
            tctx.configure(addon, sse_keep_upstream=False)
            assert addon.shell.keeper is None
            await addon.done()

    asyncio.run(scenario())


def test_an_sse_get_goes_to_the_keeper_and_the_flow_shows_the_real_upstream_at_its_end() -> None:
    async def scenario() -> None:
        addon = Addon()
        with taddons.context(addon) as tctx:
            tctx.configure(addon, sse_keep_upstream=True)
            addon.running()
            keeper = addon.shell.keeper
            assert keeper is not None
            flow = sse_flow("/events?x=1")
            flow.request.headers["connection"] = "keep-alive"
            origin = (flow.request.scheme, flow.request.host, flow.request.port)
            await addon.request(flow)
            state = addon.shell.flows[flow.id]
            assert state.keep is not None and flow.request.headers[TICKET_HEADER] == state.keep
            assert (flow.request.scheme, flow.request.host, flow.request.port) == ("http", "127.0.0.1", keeper.port)
            ticket = keeper._tickets[state.keep]
            assert ticket.request.url.endswith("/events?x=1")
            assert "connection" not in {name.lower() for name, _ in ticket.request.headers}  # (hop by hop)
            SSEKeep.restore(flow, state)
            assert (flow.request.scheme, flow.request.host, flow.request.port) == origin
            assert TICKET_HEADER not in flow.request.headers and state.origin is None
            await addon.done()

    asyncio.run(scenario())


def test_only_gets_and_posts_that_accept_a_stream_are_routed() -> None:
    async def scenario() -> None:
        addon = Addon()
        with taddons.context(addon) as tctx:
            tctx.configure(addon, sse_keep_upstream=True)
            addon.running()
            keep = keep_of(addon)
            for method, accept, routed in [
                ("GET", "text/event-stream", True),
                ("POST", "application/json, text/event-stream", True),
                ("POST", "application/json", False),
                ("PUT", "text/event-stream", False),
            ]:
                flow = sse_flow()
                flow.request.method = method
                flow.request.headers["accept"] = accept
                state = FlowState("session")
                assert keep.route(flow, state) is routed, (method, accept)
                assert (state.keep is not None) is routed and (TICKET_HEADER in flow.request.headers) is routed
            await addon.done()

    asyncio.run(scenario())


def test_urls_that_answered_a_stream_are_learned_newest_kept_while_keep_mode_is_on() -> None:
    async def scenario() -> None:
        addon = Addon()
        with taddons.context(addon) as tctx:
            addon.running()
            keep = keep_of(addon)
            first = tutils.treq(path=b"/first?a=1")
            keep.learn(first)
            assert not keep.learned(first)  # keep mode off: nothing learned
            tctx.configure(addon, sse_keep_upstream=True)
            keep.learn(first)
            assert keep.learned(tutils.treq(path=b"/first?other=2"))  # the query is not part of the URL learned
            post = tutils.treq(method=b"POST", path=b"/posted")
            keep.learn(post)
            assert not keep.learned(tutils.treq(path=b"/posted"))  # only GETs are learned
            for n in range(MAX_ENDPOINTS):
                keep.learn(tutils.treq(path=b"/n%d" % n))
            assert not keep.learned(first) and keep.learned(tutils.treq(path=b"/n0"))  # the oldest went
            await addon.done()

    asyncio.run(scenario())

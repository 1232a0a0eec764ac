"""The SSE content view (addon/sse_resume_shell/_view.py), registered by the addons and chosen for event streams."""

from __future__ import annotations

from mitmproxy import contentviews
from mitmproxy.test import taddons

from shell_harness import Addon, relay_through, sse_flow

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

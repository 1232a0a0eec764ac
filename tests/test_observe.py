"""What the addon shows: the SSE content view, flow annotations, commands and metrics, in process."""

from __future__ import annotations

import asyncio

import pytest
from mitmproxy import contentviews, exceptions
from mitmproxy.test import taddons, tflow, tutils
from prometheus_client import CollectorRegistry, generate_latest

from sse_resume_core._view import Transcript, render_events
from test_addon import relay_through, script, sse_flow


def test_render_events_pretty_prints_json_and_shows_fields() -> None:
    text = render_events(
        b'retry: 500\n\nid: 1\nevent: message\ndata: {"jsonrpc": "2.0", "id": 3}\n\n'
        b"id: 2\nevent: note\ndata: plain\ndata: two lines\n\nid\ndata:\n\n: keep-alive\n\nid: 9\n\n"
    )
    assert text.splitlines() == [
        "retry: 500",
        "",
        "#1  id: 1",
        "{",
        '  "jsonrpc": "2.0",',
        '  "id": 3',
        "}",
        "",
        "#2  id: 2  type: note",
        "plain",
        "two lines",
        "",
        "#3  id: (reset)",
        "",
        "",
        ": keep-alive",
        "",
        "(position) id: 9",
    ]


def test_transcript_keeps_the_most_recent_whole_pieces() -> None:
    t = Transcript(10)
    for piece in (b"aaaa", b"bbbb", b"cccc"):
        t.add(piece)
    assert t.value() == b": sse-resume: transcript truncated, 4 earlier bytes not kept\n\nbbbbcccc"


def test_content_view_is_selected_for_event_streams() -> None:
    addon = script.SSEResume()
    with taddons.context(addon):
        flow = sse_flow()
        relay_through(addon, flow, [b'id: 1\ndata: {"a": [1, 2]}\n\n'])
        assert flow.response is not None
        result = contentviews.prettify_message(flow.response, flow)
    assert result.view_name == "SSE"
    assert result.text == '#1  id: 1\n{\n  "a": [\n    1,\n    2\n  ]\n}'


def test_transcript_lands_on_the_flow_after_a_clean_end_and_after_a_disconnect() -> None:
    addon = script.SSEResume()
    with taddons.context(addon):
        clean, cut = sse_flow("/a"), sse_flow("/b")
        relay_through(addon, clean, [b"id: 1\ndata: a\n\n", b"id: 2\ndata: b\n\n"])
        relay_through(addon, cut, [b"id: 1\ndata: a\n\nid: 2\nda"], end=False)
    assert clean.response is not None and clean.response.raw_content == b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n"
    assert cut.response is not None and cut.response.raw_content == b"id: 1\ndata: a\n\n"
    assert cut.metadata["sse_resume"]["recorded"] == 1


def test_annotations_for_hit_miss_and_duplicates() -> None:
    addon = script.SSEResume()
    with taddons.context(addon):
        relay_through(addon, sse_flow(), [b"".join(b"id: %d\ndata: %d\n\n" % (n, n) for n in range(1, 6))])
        hit = sse_flow(last_event_id="2")
        asyncio.run(addon.request(hit))
        miss = sse_flow(last_event_id="ancient-id")
        relay_through(addon, miss, [b"id: 1\ndata: x\n\n"])
        dup = sse_flow(last_event_id="5")
        relay_through(addon, dup, [b"".join(b"id: %d\ndata: %d\n\n" % (n, n) for n in range(1, 8))])
    assert hit.comment == "sse-resume: served 3 events from history after id '2'"
    assert hit.marked == script.MARK
    assert hit.metadata["sse_resume"]["outcome"] == "hit" and hit.metadata["sse_resume"]["replayed"] == 3
    assert miss.comment == "sse-resume: Last-Event-ID 'ancient-id' unknown: forwarded upstream"
    assert miss.marked == script.MARK
    assert dup.comment == "sse-resume: resumed upstream after id '5' (nothing newer held); 5 duplicate events dropped"
    assert dup.metadata["sse_resume"]["duplicates"] == 5
    # After the hit, the client's next stream restores the retry the replay shortened (no upstream retry: 3000).
    assert dup.response is not None
    assert dup.response.raw_content == b"retry: 3000\n\nid: 6\ndata: 6\n\nid: 7\ndata: 7\n\n"


def test_a_fresh_stream_is_not_marked() -> None:
    addon = script.SSEResume()
    with taddons.context(addon):
        flow = sse_flow()
        relay_through(addon, flow, [b"id: 1\ndata: a\n\n"])
    assert not flow.marked and not flow.comment
    assert flow.metadata["sse_resume"]["outcome"] == "fresh"


def test_commands() -> None:
    addon = script.SSEResume()
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
        assert tctx.command(addon.clear_command) == "cleared 1 sessions"
        assert addon.store.snapshot().sessions == 0


def test_metrics_move_after_hit_miss_and_dedupe() -> None:
    addon = script.SSEResume()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(script.MetricsCollector(addon))

    def scrape() -> dict[str, float]:
        values = {}
        for line in generate_latest(registry).decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    with taddons.context(addon):
        before = scrape()
        relay_through(addon, sse_flow(), [b"".join(b"id: %d\ndata: %d\n\n" % (n, n) for n in range(1, 6))])
        asyncio.run(addon.request(sse_flow(last_event_id="2")))
        relay_through(addon, sse_flow(last_event_id="nope"), [b"id: 9\ndata: x\n\n"])
        relay_through(addon, sse_flow(last_event_id="5"), [b"id: 4\ndata: 4\n\nid: 6\ndata: 6\n\n"])
        after = scrape()
    assert before["sse_resume_replay_hits_total"] == 0 and after["sse_resume_replay_hits_total"] == 1
    assert after["sse_resume_replay_misses_total"] == 1
    assert after["sse_resume_events_replayed_total"] == 3
    assert after["sse_resume_events_deduplicated_total"] == 1
    assert after["sse_resume_history_events"] == 7 and after["sse_resume_sessions"] == 1
    assert after['sse_resume_evictions_total{reason="count"}'] == 0
    text = generate_latest(registry).decode()
    assert "ancient" not in text and "nope" not in text  # no ids, payloads or credentials in labels


def test_non_sse_flows_get_no_annotation() -> None:
    addon = script.SSEResume()
    with taddons.context(addon):
        flow = tflow.tflow()
        asyncio.run(addon.request(flow))
        flow.response = tutils.tresp()
        addon.responseheaders(flow)
        addon.response(flow)
    assert "sse_resume" not in flow.metadata and not flow.comment

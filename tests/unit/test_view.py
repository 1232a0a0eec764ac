"""The transcript and its rendering (sse_resume_core._view)."""

from __future__ import annotations

from sse_resume_core._view import Transcript, render_events


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


def test_render_events_shows_nothing_for_a_leading_bom() -> None:
    assert render_events(b"\xef\xbb\xbfevent: update\ndata: a\n\n").splitlines() == ["#1  type: update", "a"]


def test_transcript_keeps_the_most_recent_whole_pieces() -> None:
    t = Transcript(10)
    for piece in (b"aaaa", b"bbbb", b"cccc"):
        t.add(piece)
    assert t.value() == b": sse-resume: transcript truncated, 4 earlier bytes not kept\n\nbbbbcccc"

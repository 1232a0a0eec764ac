"""The transcript and its rendering (sse_resume_core._view)."""

from __future__ import annotations

import gc

from sse_resume_core._view import Transcript, TranscriptBudget, render_events


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


def test_a_transcript_says_when_it_changed() -> None:
    t = Transcript(10)
    assert t.version == 0
    t.add(b"")
    assert t.version == 0
    t.add(b"aaaa")
    t.extend([b"bb", b"cc"])
    assert t.version == 2 and t.size == 8


def test_the_budget_cuts_the_largest_transcripts_first_and_holds_them_together_within_it() -> None:
    budget = TranscriptBudget(800)
    small = Transcript(1000, budget)
    large = [Transcript(1000, budget) for _ in range(3)]
    small.add(b"s" * 50)
    for _ in range(30):
        for t in large:
            t.add(b"x" * 10)
        assert budget.total <= 800
    assert budget.total == sum(t.size for t in (small, *large)) <= 800
    assert small.size == 50 and small.dropped == 0  # the smallest keeps everything
    assert all(t.size >= 200 for t in large) and all(t.dropped for t in large)
    assert large[0].value().startswith(b": sse-resume: transcript truncated, ")
    assert budget.trimmed == sum(t.dropped for t in large)
    before = budget.total
    large[0].close()
    assert budget.total == before - large[0].size
    after = budget.total
    large[0].add(b"y" * 500)  # no longer counted
    assert budget.total == after


def test_a_transcript_dropped_without_close_stops_counting_at_the_next_trim() -> None:
    budget = TranscriptBudget(100)
    lost = Transcript(1000, budget)
    lost.add(b"z" * 90)
    del lost
    gc.collect()
    kept = Transcript(1000, budget)
    kept.add(b"k" * 20)  # over the limit as counted: the trim counts again, and cuts nothing
    assert budget.total == 20 and kept.size == 20


def test_no_budget_limit_means_each_transcript_is_bound_by_its_own_limit_only() -> None:
    budget = TranscriptBudget(0)
    ts = [Transcript(100, budget) for _ in range(5)]
    for t in ts:
        t.add(b"a" * 100)
    assert budget.total == 500 and budget.trimmed == 0

"""The seams of issue 17, through real mitmdump processes, in the plain relay and in keep mode: for every client,
each event at most once, in order, none skipped, or the client is told (the ``sse-resume`` header and a comment).

Each test asserts the exact events each client receives. The upstreams are the demo upstream (numbered events, one
that ignores ``Last-Event-ID`` and starts again at 1 with ``resume=0``) and ``scripted_upstream.py`` (ids stamped
by the second, ids that are not UTF-8, responses that number from 1 with data of their own, a ``retry`` sent once).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import OPTIONS_ADDON, Mitmdump, RawSSE, scrape, scripted_upstream

SSE = {"accept": "text/event-stream"}
RECORDED = "sse_resume_events_recorded_total"
MODES = ["plain", "keep"]


def options(mode: str, *more: str) -> list[str]:
    return [*(["sse_keep_upstream=true"] if mode == "keep" else []), *more]


def suffix(mode: str) -> str:
    """What keep mode adds to the ``sse-resume`` header of a resume."""
    return "; kept" if mode == "keep" else ""


@pytest.fixture(scope="module")
def scripted_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with scripted_upstream(tmp_path_factory.mktemp("scripted")) as port:
        yield port


@pytest.fixture(scope="module", params=MODES)
def bounded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, upstream_port: int
) -> Iterator[Mitmdump]:
    """A proxy in front of the demo upstream whose history holds 10 events per session."""
    tmp = tmp_path_factory.mktemp(f"bounded-{request.param}")
    with Mitmdump(tmp, upstream_port, options(request.param, "sse_max_event_history=10")) as proxy:
        proxy.mode = request.param  # type: ignore[attr-defined]
        yield proxy


@pytest.fixture(scope="module", params=MODES)
def scripted(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, scripted_port: int
) -> Iterator[Mitmdump]:
    """A proxy in front of the scripted upstream, whose options a test may change at run time."""
    tmp = tmp_path_factory.mktemp(f"scripted-{request.param}")
    with Mitmdump(tmp, scripted_port, options(request.param), extra=("-s", str(OPTIONS_ADDON)), metrics=True) as proxy:
        proxy.mode = request.param  # type: ignore[attr-defined]
        yield proxy


def mode_of(proxy: Mitmdump) -> str:
    mode: str = proxy.mode  # type: ignore[attr-defined]
    return mode


# -- clients ------------------------------------------------------------------------------------------------------


@dataclass
class Visit:
    """One response as a client saw it."""

    outcome: str  # the sse-resume header ("" when absent)
    comments: list[bytes]
    events: list[tuple[str | None, dict[str, Any]]]  # (id, data) of each event
    ended: bool  # the response ended (a replay, or the upstream's end) rather than the client hanging up


async def open_stream(port: int, path: str, last_event_id: str | None = None) -> RawSSE:
    """Send the request (``last_event_id`` as the UTF-8 bytes a browser sends) and read the response's head."""
    headers = dict(SSE)
    if last_event_id is not None:
        headers["last-event-id"] = last_event_id.encode().decode("latin-1")  # (RawSSE writes the head as Latin-1)
    sse = RawSSE()
    await sse.open(port, path, headers)
    return sse


async def visit(
    port: int, path: str, count: int, last_event_id: str | None = None, timeout: float = 20
) -> tuple[Visit, RawSSE]:
    """Open ``path`` and read ``count`` events, or to the end of the response; the stream is left open for the
    caller to abort or read on."""
    sse = await open_stream(port, path, last_event_id)
    await asyncio.wait_for(sse.read_until(lambda s: len(s.events) >= count), timeout)
    events = [(event_id, json.loads(data)) for event_id, data in sse.events]
    return Visit(sse.headers.get("sse-resume", ""), sse.comments, events, sse.ended), sse


async def read(port: int, path: str, count: int, last_event_id: str | None = None) -> Visit:
    """:func:`visit`, then hang up at once."""
    seen, sse = await visit(port, path, count, last_event_id)
    sse.abort()
    return seen


@dataclass
class Follower:
    """A client that reads as EventSource does: it hangs up after each of ``reads`` events (or when a response
    ends) and comes back at once with the id of the last event it got, until it has ``total`` events."""

    port: int
    path: str
    total: int
    reads: list[int] = field(default_factory=list)
    last_event_id: str | None = None
    visits: list[Visit] = field(default_factory=list)

    @property
    def events(self) -> list[tuple[str | None, dict[str, Any]]]:
        return [event for seen in self.visits for event in seen.events]

    @property
    def outcomes(self) -> list[str]:
        return [seen.outcome for seen in self.visits]

    async def run(self, max_visits: int = 80) -> Follower:
        reads = iter(self.reads)
        for _ in range(max_visits):
            want = min(next(reads, self.total), self.total - len(self.events))
            if want <= 0:
                return self
            seen = await read(self.port, self.path, want, self.last_event_id)
            self.visits.append(seen)
            if seen.events:
                self.last_event_id = seen.events[-1][0]
        raise AssertionError(f"{self.path}: {len(self.events)} of {self.total} events after {max_visits} visits")


def ns(events: list[tuple[str | None, dict[str, Any]]]) -> list[int]:
    return [data["n"] for _, data in events]


def told(seen: Visit, outcome: str) -> bool:
    """The response said ``outcome`` in its header, and in a comment first in the stream."""
    comment = seen.comments[0].decode() if seen.comments else ""
    return seen.outcome.split(";")[0] == outcome and comment.startswith(": sse-resume: ")


async def recorded(proxy: Mitmdump, at_least: float) -> None:
    await asyncio.to_thread(proxy.wait_metric, RECORDED, at_least)


# -- case 2: past the history bound, an upstream that starts over ---------------------------------------------------


def test_past_the_history_a_reconnect_gets_only_what_follows(bounded: Mitmdump) -> None:
    """History 10, an upstream that starts again at 1: after 20 events a reconnect with 20 gets 21.. only (the
    evicted 1..10 used to come back)."""
    mode = mode_of(bounded)
    path = f"/sse/c2-once-{mode}?resume=0&interval=0.02"

    async def scenario() -> tuple[Visit, Follower]:
        first = await read(bounded.port, path, 20)
        return first, await Follower(bounded.port, path, 20, last_event_id="20").run()

    first, again = asyncio.run(scenario())
    assert ns(first.events) == list(range(1, 21))
    assert ns(again.events) == list(range(21, 41)), (ns(again.events), again.outcomes)
    assert {o.split(";")[0] for o in again.outcomes} <= {"hit", "up-to-date"}, again.outcomes


@pytest.mark.parametrize("mode", MODES)
def test_past_the_history_a_client_away_is_told_and_gets_what_follows_only(
    tmp_path: Path, upstream_port: int, mode: str
) -> None:
    """History 10, an upstream that starts again at 1. The client reads 1..5 and goes; the stream goes on past the
    history (another client of the session reads on to 30; in keep mode the keeper reads on to its bound, 10
    events past what it delivered). The client comes back with 4 (it lost its last event, say), whose successor
    left the history: it is told (behind) and gets 5.. from the upstream, which sends 1.. again: none of 1..4 a
    second time, none skipped."""
    path = "/sse/c2-away?resume=0&interval=0.02"

    async def scenario(proxy: Mitmdump) -> tuple[Visit, Follower]:
        first = await read(proxy.port, path, 5)
        if mode == "keep":  # the keeper reads on while the client is away, up to the history's bound
            await asyncio.to_thread(proxy.wait_metric, "sse_resume_keep_buffer_full_total", 1)
        else:
            await read(proxy.port, path, 30)  # another client of the session reads on
        return first, await Follower(proxy.port, path, 20, last_event_id="4").run()

    with Mitmdump(tmp_path, upstream_port, options(mode, "sse_max_event_history=10"), metrics=True) as proxy:
        first, back = asyncio.run(scenario(proxy))
    assert ns(first.events) == [1, 2, 3, 4, 5]
    assert told(back.visits[0], "behind"), back.visits[0]
    assert back.visits[0].outcome == "behind" + suffix(mode)
    assert ns(back.events) == list(range(5, 25)), (ns(back.events), back.outcomes)


def test_past_the_history_reconnects_never_repeat_or_skip(bounded: Mitmdump) -> None:
    """History 10, an upstream that starts again at 1 and sends fast: every time the client hangs up, events are
    left in flight and the history moves on past its position (so most reconnects are behind): each event once."""
    path = f"/sse/c2-many-{mode_of(bounded)}?resume=0&interval=0.001"
    reads = [5, 3, 7, 4, 12, 5, 3, 11]
    client = asyncio.run(Follower(bounded.port, path, sum(reads), reads).run())
    assert ns(client.events) == list(range(1, sum(reads) + 1)), (ns(client.events), client.outcomes)
    assert len(client.visits) >= len(reads)
    assert not [o for o in client.outcomes if o.startswith("miss")], client.outcomes


@pytest.mark.parametrize("mode", MODES)
def test_clients_of_one_session_record_one_copy(tmp_path: Path, upstream_port: int, mode: str) -> None:
    """Four clients of one session read the same upstream stream (it starts at 1 for each, 15 events, then
    silence): the history holds it once."""
    path = "/sse/c2-copies?resume=0&interval=0.01&hang_after=15"

    async def scenario(proxy: Mitmdump) -> tuple[list[Visit], str]:
        clients = await asyncio.gather(*(read(proxy.port, path, 15) for _ in range(4)))
        if mode == "keep":
            await recorded(proxy, 15)
        # A resume: every relay records what it holds before the decision, so the counts below are complete.
        after = await open_stream(proxy.port, path, "15")
        after.abort()
        return list(clients), after.headers.get("sse-resume", "")

    with Mitmdump(tmp_path, upstream_port, options(mode), metrics=True) as proxy:
        clients, after = asyncio.run(scenario(proxy))
        metrics = scrape(proxy.metrics)
    for seen in clients:
        assert ns(seen.events) == list(range(1, 16))
    held = (metrics[RECORDED], metrics["sse_resume_history_events"], metrics["sse_resume_sessions"])
    assert held == (15, 15, 1), held  # events recorded, held, sessions: one copy
    assert after == "up-to-date" + suffix(mode)  # (15 names one event: several copies would make it a miss)


def test_thirty_clients_of_one_session_reconnecting_see_no_gap_and_no_repeat(bounded: Mitmdump) -> None:
    """Thirty clients of one session, each hanging up after a few events and coming back, again and again (the
    history holds 10 events): each gets 1..30, once each, in order."""
    path = f"/sse/c2-thirty-{mode_of(bounded)}?resume=0&interval=0.02"
    rng = random.Random(17)
    total = 30

    async def scenario() -> list[Follower]:
        clients = [Follower(bounded.port, path, total, [rng.randint(1, 6) for _ in range(total)]) for _ in range(30)]
        await asyncio.gather(*(client.run() for client in clients))
        return clients

    clients = asyncio.run(scenario())
    wrong = {i: (ns(c.events), c.outcomes) for i, c in enumerate(clients) if ns(c.events) != list(range(1, total + 1))}
    assert not wrong, wrong
    assert sum(len(c.visits) for c in clients) >= 30 * 6  # they did reconnect, many times each


# -- case 3: ids that are not unique ----------------------------------------------------------------------------


def test_ids_stamped_by_the_second_every_event_arrives(scripted: Mitmdump) -> None:
    """Thirty events, ten a second stamp (their id): all thirty arrive. Back with the last stamp, which names ten
    events, the client is told (a miss) and gets what the upstream sends (it resends that second's ten)."""
    mode = mode_of(scripted)
    path = f"/sse/c3-stamp-{mode}?ids=stamp&per_id=10&count=30&interval=0.005&resume=from"

    async def scenario() -> tuple[Visit, Visit]:
        first = await read(scripted.port, path, 30)
        return first, await read(scripted.port, path, 10, first.events[-1][0])

    first, back = asyncio.run(scenario())
    assert ns(first.events) == list(range(1, 31))
    assert [i for i, _ in first.events] == [str(1_700_000_001 + (n - 1) // 10) for n in range(1, 31)]
    assert told(back, "miss"), back
    assert back.outcome == "miss" + suffix(mode)
    assert back.comments[0].startswith(b": sse-resume: Last-Event-ID names 10 events of this session")
    assert ns(back.events) == list(range(21, 31))


def test_ids_that_are_not_utf8_every_event_arrives(scripted: Mitmdump) -> None:
    r"""Four events alike but for their ids, \xff1, \xfe1, \xfd1, \xfc1 (each reads as \ufffd1): all four arrive,
    byte for byte. Back with \ufffd1, which names all four, the client is told."""
    mode = mode_of(scripted)
    path = f"/sse/c3-bytes-{mode}?ids=bad-utf8&per_id=4&count=4&same=1&interval=0.005&resume=from"
    sent = [b'id: %s1\ndata: {"same": true}\n\n' % bytes([b]) for b in (0xFF, 0xFE, 0xFD, 0xFC)]

    async def raw_body() -> bytes:
        sse = await open_stream(scripted.port, path)
        body = b""
        while body.count(b"\n\n") < len(sent):
            body += await asyncio.wait_for(sse.read_chunk(), 20)
        sse.abort()
        return body

    async def scenario() -> tuple[bytes, Visit]:
        body = await raw_body()
        return body, await read(scripted.port, path, 4, "\ufffd1")

    body, back = asyncio.run(scenario())
    assert body == b"".join(sent), body
    assert told(back, "miss"), back
    assert back.outcome == "miss" + suffix(mode)
    assert back.comments[0].startswith(b": sse-resume: Last-Event-ID names 4 events of this session")
    assert [(i, data) for i, data in back.events] == [("\ufffd1", {"same": True})] * 4


# -- case 4: ids that name events of two streams ----------------------------------------------------------------


def test_responses_numbered_from_1_an_id_both_hold_is_a_miss_not_the_other_stream(
    scripted: Mitmdump, scripted_port: int
) -> None:
    """Every response numbers from 1 with data of its own. Client A reads 1..5 of response 1, client B (same
    session) 1..10 of response 2; A back with 5 is told (id 5 names an event of each) and gets response 3 from its
    start: never response 2's 6..10."""
    mode = mode_of(scripted)
    path = f"/sse/c4-{mode}?fresh=1&interval=0.02"

    async def scenario() -> tuple[Visit, Visit, Visit]:
        a = await read(scripted.port, path, 5)
        b = await read(scripted.port, path, 10)
        return a, b, await read(scripted.port, path, 8, "5")

    a, b, back = asyncio.run(scenario())
    assert [(d["r"], d["n"]) for _, d in a.events] == [(1, n) for n in range(1, 6)]
    assert [(d["r"], d["n"]) for _, d in b.events] == [(2, n) for n in range(1, 11)]
    assert told(back, "miss"), back
    assert back.outcome == "miss" + suffix(mode)
    assert back.comments[0].startswith(b": sse-resume: Last-Event-ID names 2 events of this session")
    assert [(d["r"], d["n"]) for _, d in back.events] == [(3, n) for n in range(1, 9)]
    seen = httpx.get(f"http://127.0.0.1:{scripted_port}/requests").json()
    mine = [r["last-event-id"] for r in seen if r["target"] == path]
    assert mine == [None, None, "5"]  # forwarded as the client sent it (sse_stale_policy=forward)


# -- case 6: what the Resumer remembers outlives a change of options ------------------------------------------------


@pytest.mark.parametrize(
    "option", ["sse_event_ttl=301", "sse_max_event_history=1001", "sse_dedupe_window=99", "sse_stale_policy=forward"]
)
def test_after_an_option_changes_the_upstreams_retry_comes_back(scripted: Mitmdump, option: str) -> None:
    """A client gets a replay, which ends with the short retry; then an sse_ option changes at run time; the
    client comes back up to date and gets the upstream's own retry back (the upstream sent it once, at the start
    of its first response, so only the proxy can restore it)."""
    if mode_of(scripted) == "keep":
        pytest.skip("keep mode serves a replay on the kept stream's response: no short retry to restore")
    name = option.split("=")[0]
    # 8 events, then silence; every response starts again at 1 (so the proxy's own bytes go out with the first).
    path = f"/sse/c6-{name}?retry_once=1234&count=8&interval=0.005&resume=ignore"

    async def scenario() -> tuple[Visit, Visit, str, bytes]:
        at_least = scripted.metric(RECORDED) + 8
        first, sse = await visit(scripted.port, path, 3)
        await recorded(scripted, at_least)  # all 8 went by (the client reads 3 of them)
        sse.abort()
        replay = await read(scripted.port, path, 100, "3")  # (to its end)
        changed = await asyncio.to_thread(httpx.get, f"{scripted.url}/__options__?{option}")
        assert changed.status_code == 200, changed.text
        back = await open_stream(scripted.port, path, "8")
        try:  # the proxy's own first bytes: it drops 1..8 (the client had them), then the upstream is silent
            body = await asyncio.wait_for(back.read_chunk(), 10)
        except TimeoutError:
            body = b""  # none came
        back.abort()
        return first, replay, back.headers.get("sse-resume", ""), body

    first, replay, outcome, body = asyncio.run(scenario())
    assert ns(first.events) == [1, 2, 3]
    assert replay.outcome == "hit" and ns(replay.events) == [4, 5, 6, 7, 8] and replay.ended
    assert outcome == "up-to-date"
    assert body == b"retry: 1234\n\n", body  # the upstream's retry, which the replay's short one had replaced

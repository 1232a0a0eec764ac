"""Fault injection (addon/sse_resume_shell/_faults.py): the injector on its own, then the addon in process, with
the SSEResume addon in front of it as the script lists them. Real cuts through a real mitmdump are in
tests/e2e/test_fault_injection_e2e.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from mitmproxy import exceptions, hooks, optmanager
from mitmproxy.http import HTTPFlow
from mitmproxy.test import taddons, tflow, tutils

from sse_resume_shell import FAULT_OPTIONS, MARKS, Fault, Injector, SSEFaults
from sse_resume_shell._faultstream import _placed, _without_last_events
from sse_resume_shell._features import deferred_errors
from test_sse_resume import Addon, register_with_deferred, script

EVENTS = [b'id: %d\ndata: {"n": %d}\n\n' % (n, n) for n in range(1, 13)]
STREAM = b": hello\n\n" + b"".join(EVENTS[:6]) + b"retry: 100\n\n" + b"".join(EVENTS[6:])


def pieces(data: bytes, how: str, seed: int = 0) -> list[bytes]:
    """``data`` whole, a byte at a time, or split at random points."""
    if how == "whole":
        return [data]
    if how == "bytes":
        return [data[i : i + 1] for i in range(len(data))]
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), 15))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def run(injector: Injector, chunks: Iterable[bytes], now: float = 0.0) -> tuple[bytes, list[Fault]]:
    out: list[bytes] = []
    faults: list[Fault] = []
    for chunk in chunks:
        data, made = injector.feed(chunk, now)
        out.append(data)
        faults += made
    return b"".join(out), faults


SPLITS = ["whole", "bytes", "random"]


# -- the injector ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", SPLITS)
def test_a_cut_sends_exactly_up_to_the_end_of_the_nth_event_then_nothing(how: str) -> None:
    injector = Injector(cut_after=5)
    out, faults = run(injector, pieces(STREAM, how))
    assert out == b": hello\n\n" + b"".join(EVENTS[:5])  # the comment is no event; the 5th event whole
    assert faults == [Fault("cut", 5, "5", "sse_fault_cut_after=5")]
    assert injector.done and injector.feed(b"data: more\n\n", 1.0) == (b"", [])


@pytest.mark.parametrize("how", SPLITS)
def test_every_nth_event_is_sent_twice_right_after_itself(how: str) -> None:
    injector = Injector(repeat_after=4)
    out, faults = run(injector, pieces(STREAM, how))
    expected = STREAM.replace(EVENTS[3], EVENTS[3] * 2).replace(EVENTS[7], EVENTS[7] * 2)
    expected = expected.replace(EVENTS[11], EVENTS[11] * 2)
    assert out == expected
    assert [(f.kind, f.events, f.last_event_id) for f in faults] == [
        ("repeat", 4, "4"),
        ("repeat", 8, "8"),
        ("repeat", 12, "12"),
    ]
    assert injector.repeats == 3 and injector.last_repeated == "12"


def test_crlf_events_and_a_byte_order_mark_are_counted_and_repeated_byte_for_byte() -> None:
    events = [b"id: a%d\r\nevent: message\r\ndata: x\r\n\r\n" % n for n in range(4)]
    stream = b"\xef\xbb\xbf" + b"".join(events)
    out, _ = run(Injector(repeat_after=2), pieces(stream, "bytes"))
    assert out == b"\xef\xbb\xbf" + events[0] + events[1] * 2 + events[2] + events[3] * 2


def test_blocks_without_data_are_not_events() -> None:
    stream = b"id: 1\n\n: comment\n\nretry: 5\n\n" + EVENTS[0] + b"id: 9\n\n" + EVENTS[1]
    out, faults = run(Injector(cut_after=2), pieces(stream, "bytes"))
    assert out == stream and faults[0].events == 2 and faults[0].last_event_id == "2"


def test_an_event_over_the_parser_bound_passes_uncounted() -> None:
    big = b"id: big\ndata: " + b"x" * 200 + b"\n\n"
    stream = EVENTS[0] + big + EVENTS[1]
    out, faults = run(Injector(cut_after=2, max_event_bytes=64), pieces(stream, "random"))
    assert out == stream and [f.last_event_id for f in faults] == ["2"]


@pytest.mark.parametrize("how", SPLITS)
def test_a_stall_holds_what_follows_the_nth_event_until_its_time_is_up(how: str) -> None:
    injector = Injector(stall_after=3, stall_for=2.0)
    first = b"".join(EVENTS[:6])
    out, faults = run(injector, pieces(first, how), now=10.0)
    assert out == b"".join(EVENTS[:3])  # held from the end of event 3 on
    assert faults == [Fault("stall", 3, "3", "sse_fault_stall_after=3")] and injector.stalling
    assert injector.feed(EVENTS[6], 11.9) == (b"", [])  # still held
    out, faults = injector.feed(EVENTS[7], 12.0)  # time is up: everything held goes, then this chunk
    assert out == b"".join(EVENTS[3:8]) and faults == []
    assert not injector.stalling and injector.stalled == pytest.approx(2.0) and injector.stalls == 1


def test_a_stall_starts_again_at_the_next_nth_event_sent_after_it() -> None:
    injector = Injector(stall_after=2, stall_for=1.0)
    out, _ = run(injector, [EVENTS[0], EVENTS[1], EVENTS[2], EVENTS[3]], now=0.0)
    assert out == b"".join(EVENTS[:2])  # events 3 and 4 held; event 4 falls in the stall and starts none
    out, faults = injector.feed(EVENTS[4] + EVENTS[5] + EVENTS[6], 1.0)
    assert out == b"".join(EVENTS[2:6]) and [f.events for f in faults] == [6]  # released, then stalled at 6
    assert injector.stalls == 2


def test_a_stall_ends_early_at_its_bound_and_at_the_streams_end() -> None:
    injector = Injector(stall_after=1, stall_for=60.0, max_held=4 * len(EVENTS[1]))
    out, _ = run(injector, EVENTS[:5])
    assert out == EVENTS[0] and injector.cut_short == 0  # events 2 to 5 held: at the bound, not past it
    out, _ = run(injector, [EVENTS[5]])
    assert out == b"".join(EVENTS[1:6]) and injector.cut_short == 1  # past it: the stall ends early
    injector = Injector(stall_after=1, stall_for=60.0)
    out, _ = run(injector, EVENTS[:3])
    assert out == EVENTS[0] and injector.finish(5.0) == EVENTS[1] + EVENTS[2] and injector.stalled == 5.0


def test_a_cut_during_a_stall_drops_what_the_stall_held() -> None:
    injector = Injector(stall_after=1, stall_for=60.0, cut_after=3)
    out, faults = run(injector, EVENTS[:5])
    assert out == EVENTS[0] and [f.kind for f in faults] == ["stall", "cut"]
    assert injector.finish(1.0) == b"" and injector.take_held() == b""


def test_repeat_and_cut_on_the_same_event_repeat_it_then_cut() -> None:
    out, faults = run(Injector(repeat_after=2, cut_after=2), [b"".join(EVENTS[:4])])
    assert out == EVENTS[0] + EVENTS[1] * 2 and [f.kind for f in faults] == ["repeat", "cut"]


def test_a_flows_events_after_its_cut_are_taken_off_it() -> None:
    stream = b": hi\n\n" + b"".join(EVENTS[:4]) + b": bye\n\n"
    assert _without_last_events(stream, 1) == b": hi\n\n" + b"".join(EVENTS[:3])
    assert _without_last_events(stream, 0) == b": hi\n\n" + b"".join(EVENTS[:4])
    assert _without_last_events(stream, 4) == _without_last_events(stream, 9) == b""


# -- the comment -----------------------------------------------------------------------------------------------


def test_the_faults_sentence_goes_before_the_resume_addons_and_survives_its_replacement() -> None:
    assert _placed("", "", "F1", "") == "F1"
    assert _placed("user", "", "F1", "") == "user\nF1"
    assert _placed("user\nN1", "", "F1", "N1") == "user\nF1\nN1"
    assert _placed("N1", "", "F1", "N1") == "F1\nN1"
    assert _placed("user\nF1\nN1", "F1", "F2", "N1") == "user\nF2\nN1"  # replaced where it is


# -- the addon in process --------------------------------------------------------------------------------------


class Proxyserver:
    """Stands in for mitmproxy's proxyserver: one connection handler per client id, recording closes."""

    def __init__(self) -> None:
        self.connections: dict[str, Handler] = {}

    def connect(self, flow: HTTPFlow) -> Handler:
        handler = self.connections.setdefault(flow.client_conn.id, Handler(flow.client_conn))
        return handler


class Handler:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.transports = {client: object()}
        self.closed: list[Any] = []

    def close_connection(self, connection: Any, half_close: bool = False) -> None:
        self.closed.append(connection)


def sse_response(flow: HTTPFlow, status: int = 200) -> None:
    flow.response = tutils.tresp(content=None, status_code=status)
    flow.response.headers["content-type"] = "text/event-stream"


def script_addons() -> tuple[Any, SSEFaults]:
    """A fresh pair as addon/sse_resume.py lists them: SSEResume, then the faults, hooked up to its flows."""
    resume = Addon()
    return resume, SSEFaults(flow_state=resume.shell.flows.get)


@contextlib.contextmanager
def running(**options: Any) -> Iterator[tuple[taddons.context, Any, SSEFaults, Proxyserver]]:
    resume, faults = script_addons()
    server = Proxyserver()
    with taddons.context(resume, faults, server) as tctx:
        tctx.configure(faults, **options)
        yield tctx, resume, faults, server


def open_stream(resume: Any, faults: SSEFaults, server: Proxyserver | None, path: str = "/sse") -> HTTPFlow:
    flow = tflow.tflow()
    flow.request.path = path
    flow.request.headers["accept"] = "text/event-stream"
    if server is not None:
        server.connect(flow)
    asyncio.get_running_loop()  # (hooks run inside mitmproxy's loop)
    sse_response(flow)
    resume.responseheaders(flow)
    faults.responseheaders(flow)
    return flow


def send(flow: HTTPFlow, chunks: list[bytes]) -> list[bytes]:
    assert flow.response is not None and callable(flow.response.stream)
    out: list[bytes] = []
    for chunk in chunks:
        result = flow.response.stream(chunk)
        assert result != b"" or chunk == b"", "an empty bytes return ends an HTTP/1 response"
        out += [result] if isinstance(result, bytes) else list(result)
    return out


def test_the_script_lists_the_faults_after_the_resume_addon_hooked_up_to_its_flows() -> None:
    assert [type(a).__name__ for a in script.addons][-2:] == ["SSECommands", "SSEFaults"]
    resume = next(a for a in script.addons if type(a).__name__ == "SSEResume")
    assert script.addons[-1]._flow_state.__self__ is resume.shell.flows  # type: ignore[attr-defined]


def test_with_no_fault_scheduled_the_resume_addons_callable_is_left_as_it_is() -> None:
    async def scenario() -> None:
        with running() as (_, resume, faults, server):
            flow = open_stream(resume, faults, server)
            assert flow.response is not None and flow.response.stream == resume.shell.flows[flow.id].relay.pipe
            assert flow.id in faults._streams  # (known, for the commands)

    asyncio.run(scenario())


def test_a_scheduled_cut_closes_the_client_connection_once_the_nth_event_is_returned() -> None:
    async def scenario() -> None:
        with running(sse_fault_cut_after=3) as (_, resume, faults, server):
            flow = open_stream(resume, faults, server)
            out = send(flow, [*EVENTS[:2], EVENTS[2] + EVENTS[3]])
            handler = server.connections[flow.client_conn.id]
            assert b"".join(out) == b"".join(EVENTS[:3]) and handler.closed == []  # not before it is written
            await asyncio.sleep(0)  # one turn of the loop: mitmproxy writes what the callable returned
            assert handler.closed == [flow.client_conn]
            assert send(flow, [EVENTS[4]]) == []  # nothing more is sent (and the relay still records it)
            assert flow.marked == MARKS["cut"]
            assert flow.comment == "sse-resume fault: client connection cut after 3 events, last id '3' " + (
                "(sse_fault_cut_after=3)"
            )
            flow.error = None
            resume.error(flow)
            faults.error(flow)
            assert flow.response is not None and flow.response.raw_content == b"".join(EVENTS[:3])  # what it got
            assert flow.metadata["sse_faults"]["cut"] == {
                "after_events": 3,
                "events_relayed_after": 2,
                "last_event_id": "'3'",
                "by": "sse_fault_cut_after=3",
            }
            assert flow.metadata["sse_resume"]["recorded"] == 5  # events 4 and 5 came after the cut: history too
            assert faults.injected["cut"] == 1

    asyncio.run(scenario())


def test_a_cut_that_cannot_be_made_leaves_the_stream_whole() -> None:
    async def scenario() -> None:
        with running(sse_fault_cut_after=2, sse_fault_repeat_after=2) as (_, resume, faults, _server):
            flow = open_stream(resume, faults, None)  # a client connection mitmproxy does not hold
            assert b"".join(send(flow, EVENTS[:3])) == EVENTS[0] + EVENTS[1] * 2 + EVENTS[2]

    asyncio.run(scenario())


def test_a_timed_cut_fires_on_the_loop_and_a_finished_stream_is_not_cut() -> None:
    async def scenario() -> None:
        with running(sse_fault_cut_every=1) as (_, resume, faults, server):
            flow = open_stream(resume, faults, server)
            stream = faults._streams[flow.id]
            assert stream.timer is not None
            send(flow, EVENTS[:2])
            faults._timed_cut(flow.id, 1)  # what the timer calls
            assert server.connections[flow.client_conn.id].closed == [flow.client_conn]
            assert "cut after 2 events, last id '2' (sse_fault_cut_every=1)" in flow.comment
            ended = open_stream(resume, faults, server)
            timer = faults._streams[ended.id].timer
            faults.response(ended)
            assert timer is not None and timer.cancelled() and ended.id not in faults._streams

    asyncio.run(scenario())


def test_stall_and_repeat_wrap_the_resume_addons_callable_and_keep_its_end() -> None:
    async def scenario() -> None:
        with running(sse_fault_repeat_after=2) as (_, resume, faults, server):
            flow = open_stream(resume, faults, server)
            out = send(flow, [*EVENTS[:4], b""])
            assert b"".join(out) == EVENTS[0] + EVENTS[1] * 2 + EVENTS[2] + EVENTS[3] * 2
            assert flow.marked == MARKS["repeat"] and "sent 2 events twice, every 2nd" in flow.comment
            resume.response(flow)
            faults.response(flow)
            assert flow.response is not None and flow.response.raw_content == b"".join(EVENTS[:4])  # no copies
            assert flow.metadata["sse_faults"]["repeats"] == 2

    asyncio.run(scenario())


def test_a_stream_passed_on_as_it_comes_is_wrapped_too() -> None:
    async def scenario() -> None:
        with running(sse_fault_repeat_after=1) as (_, _resume, faults, server):
            flow = tflow.tflow()
            server.connect(flow)
            sse_response(flow)
            assert flow.response is not None
            flow.response.stream = True  # as the resume addon sets it for kept or undecodable streams
            faults.responseheaders(flow)
            assert send(flow, [EVENTS[0], b""]) == [EVENTS[0] * 2]

    asyncio.run(scenario())


def test_the_filter_chooses_the_streams_and_other_responses_are_left_alone() -> None:
    async def scenario() -> None:
        with running(sse_fault_repeat_after=1, sse_fault_filter="~u /chosen") as (_, resume, faults, server):
            other = open_stream(resume, faults, server, "/other")
            chosen = open_stream(resume, faults, server, "/chosen")
            assert send(other, [EVENTS[0]]) == [EVENTS[0]]
            assert send(chosen, [EVENTS[0]]) == [EVENTS[0] * 2]
            failed = tflow.tflow()
            sse_response(failed, 404)
            assert failed.response is not None
            failed.response.stream = True
            faults.responseheaders(failed)
            assert failed.response.stream is True and failed.id not in faults._streams

    asyncio.run(scenario())


def test_an_internal_error_passes_the_rest_through_with_what_a_stall_held(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        with running(sse_fault_stall_after=1, sse_fault_stall_for=60) as (_, resume, faults, server):
            flow = open_stream(resume, faults, server)
            assert send(flow, EVENTS[:2]) == [EVENTS[0]]
            injector = faults._streams[flow.id].injector
            assert injector is not None

            def broken(data: bytes, now: float) -> tuple[bytes, list[Fault]]:
                raise RuntimeError("a bug")

            injector.feed = broken  # type: ignore[method-assign]
            with caplog.at_level(logging.ERROR):
                assert b"".join(send(flow, [EVENTS[2]])) == EVENTS[1] + EVENTS[2]
                assert send(flow, [EVENTS[3]]) == [EVENTS[3]]
            assert [r.getMessage().splitlines()[0] for r in caplog.records] == [
                f"sse-resume: internal error in fault injection on {flow.id}; it goes on without faults"
            ]

    asyncio.run(scenario())


# -- commands --------------------------------------------------------------------------------------------------


def test_sse_cut_cuts_the_open_sse_streams_given_once_per_connection() -> None:
    async def scenario() -> None:
        with running() as (tctx, resume, faults, server):
            a = open_stream(resume, faults, server)
            b = open_stream(resume, faults, server)
            b.client_conn = a.client_conn  # two streams on one (HTTP/2) connection
            c = open_stream(resume, faults, server)
            plain = tflow.tflow(resp=True)
            answer = tctx.master.commands.call("sse.cut", [a, plain])
            assert answer.startswith("cut the client connections of 2 SSE streams (")
            assert server.connections[a.client_conn.id].closed == [a.client_conn]
            assert server.connections[c.client_conn.id].closed == []
            assert a.marked == b.marked == MARKS["cut"] and not c.marked
            assert a.comment == "sse-resume fault: client connection cut (command sse.cut)"
            assert (
                b.comment
                == f"sse-resume fault: client connection cut (command sse.cut, on the connection of flow {a.id[:8]})"
            )
            faults.error(a)  # (its stream has ended)
            assert tctx.master.commands.call("sse.cut", [a]) == "no open SSE stream among the 1 flow given: nothing cut"
            assert faults.injected["cut"] == 2

    asyncio.run(scenario())


def test_sse_cut_session_takes_a_key_prefix_or_the_session_header() -> None:
    async def scenario() -> None:
        with running() as (tctx, resume, faults, server):
            flows = []
            for session in ("one", "one", "two"):
                flow = tflow.tflow()
                flow.request.path = "/mcp"
                flow.request.headers["accept"] = "text/event-stream"
                flow.request.headers["mcp-session-id"] = session
                server.connect(flow)
                await resume.request(flow)
                sse_response(flow)
                resume.responseheaders(flow)
                faults.responseheaders(flow)
                flows.append(flow)
            answer = tctx.master.commands.call("sse.cut.session", "one")
            assert answer.startswith("cut the client connections of 2 SSE streams")
            assert [bool(server.connections[f.client_conn.id].closed) for f in flows] == [True, True, False]
            key = resume.shell.flows[flows[2].id].session
            assert tctx.master.commands.call("sse.cut.session", key[:6]).startswith("cut the client connection of 1")
            with pytest.raises(exceptions.CommandError, match="no open SSE stream of a session 'nobody'"):
                tctx.master.commands.call("sse.cut.session", "nobody")
            with pytest.raises(exceptions.CommandError, match="name a session"):
                tctx.master.commands.call("sse.cut.session", " ")

    asyncio.run(scenario())


def test_sse_faults_says_what_is_scheduled_and_done() -> None:
    async def scenario() -> None:
        with running(sse_fault_repeat_after=1, sse_fault_filter="~u /sse") as (tctx, resume, faults, server):
            flow = open_stream(resume, faults, server)
            send(flow, EVENTS[:2])
            assert tctx.master.commands.call("sse.faults") == (
                "scheduled: sse_fault_repeat_after=1, sse_fault_filter=~u /sse; 1 open SSE stream (1 following the "
                "schedules); injected so far: 0 cuts, 0 stalls, 2 repeats"
            )

    asyncio.run(scenario())


# -- options ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("sse_fault_cut_after", -1, "sse_fault_cut_after: Input should be greater than or equal to 0"),
        ("sse_fault_stall_for", 0, "sse_fault_stall_for: Input should be greater than or equal to 1"),
        ("sse_fault_filter", "~u (", "sse_fault_filter: Invalid filter expression"),
    ],
)
def test_wrong_values_at_run_time_are_refused_and_the_old_value_kept(option: str, value: object, message: str) -> None:
    faults = SSEFaults()
    with taddons.context(faults) as tctx:
        tctx.configure(faults, sse_fault_cut_after=4)
        faults.running()
        with pytest.raises(exceptions.OptionsError, match=message.replace("(", r"\(")):
            tctx.configure(faults, **{option: value})
        assert faults.settings.cut_after == 4


def test_a_wrong_set_value_is_an_error_naming_it(caplog: pytest.LogCaptureFixture) -> None:
    with taddons.context() as tctx, caplog.at_level(logging.ERROR):
        resume, faults = script_addons()
        register_with_deferred(tctx, resume, "sse_fault_cut_after=x", "sse_fault_repeat_after=3", "sse_dedupe_window=7")
        assert not caplog.records  # the resume addon leaves the faults' options to the faults addon
        tctx.master.addons.register(faults)
        errors = [r.getMessage() for r in caplog.records]
        assert errors == ["sse-resume: invalid option: Failed to parse option sse_fault_cut_after: not an integer: x"]
        tctx.master.addons.invoke_addon_sync(faults, hooks.ConfigureHook(set(FAULT_OPTIONS)))
        assert faults.settings.repeat_after == 3 and resume.settings.dedupe_window == 7


def test_a_misspelt_fault_option_is_named_with_the_right_one(caplog: pytest.LogCaptureFixture) -> None:
    with taddons.context() as tctx, caplog.at_level(logging.ERROR):
        register_with_deferred(tctx, Addon(), "sse_fault_cut_aftr=3")
    assert [r.getMessage() for r in caplog.records] == [
        "sse-resume: invalid option: sse_fault_cut_aftr: no such option (did you mean sse_fault_cut_after?)"
    ]


def test_the_deferred_check_skips_names_registered_later() -> None:
    options = optmanager.OptManager()
    options.set("sse_count=x", "sse_later=1", defer=True)
    options.add_option("sse_count", int, 0, "")
    assert deferred_errors(options, ["sse_count", "sse_later"]) == [
        "Failed to parse option sse_count: not an integer: x"
    ]
    assert "sse_later" in options.deferred

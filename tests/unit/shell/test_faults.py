"""Fault injection (addon/sse_resume_shell/_faults.py): the addon in process, with
the SSEResume addon in front of it as the script lists them. Real cuts through a real mitmdump are in
tests/e2e/test_fault_injection_e2e.py."""

from __future__ import annotations

import asyncio
import logging

import pytest
from mitmproxy import exceptions, hooks
from mitmproxy.test import taddons, tflow

from fault_harness import EVENTS, open_stream, running, script_addons, send, sse_response
from shell_harness import Addon, register_with_deferred
from sse_resume_shell import FAULT_OPTIONS, MARKS, Fault, SSEFaults


def test_with_no_fault_scheduled_the_resume_addons_callable_is_left_as_it_is() -> None:
    async def scenario() -> None:
        with running() as (_, resume, faults, server):
            flow = open_stream(resume, faults, server)
            assert flow.response is not None and flow.response.stream == resume.shell.flows[flow.id].relay.pipe
            assert flow.id in faults.streams  # (known, for the commands)

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
            stream = faults.streams[flow.id]
            assert stream.timer is not None
            send(flow, EVENTS[:2])
            faults._timed_cut(flow.id, 1)  # what the timer calls
            assert server.connections[flow.client_conn.id].closed == [flow.client_conn]
            assert "cut after 2 events, last id '2' (sse_fault_cut_every=1)" in flow.comment
            ended = open_stream(resume, faults, server)
            timer = faults.streams[ended.id].timer
            faults.response(ended)
            assert timer is not None and timer.cancelled() and ended.id not in faults.streams

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
            assert failed.response.stream is True and failed.id not in faults.streams

    asyncio.run(scenario())


def test_an_internal_error_passes_the_rest_through_with_what_a_stall_held(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        with running(sse_fault_stall_after=1, sse_fault_stall_for=60) as (_, resume, faults, server):
            flow = open_stream(resume, faults, server)
            assert send(flow, EVENTS[:2]) == [EVENTS[0]]
            injector = faults.streams[flow.id].injector
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

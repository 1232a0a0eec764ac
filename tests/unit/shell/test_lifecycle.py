"""The history store's life in a running proxy (addon/sse_resume_shell/_lifecycle.py), in process: started with
the proxy and the settings said once, what relays hold back recorded on the flush timer, the open flows refreshed
on it, and at the end the keeper closed before the store."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

import pytest
from mitmproxy.test import taddons

import sse_resume_shell._lifecycle as lifecycle
from shell_harness import Addon, respond, sse_flow
from sse_resume_core import MemoryHistory
from sse_resume_keep import Keeper
from sse_resume_shell._lifecycle import SSELifecycle


class RecordingStore(MemoryHistory):
    """A memory history that notes its life cycle in ``noted``."""

    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.noted = events

    def start(self) -> None:
        self.noted.append("store started")

    async def aclose(self) -> None:
        self.noted.append("store closed")


class RecordingKeeper:
    def __init__(self, events: list[str]) -> None:
        self.noted = events

    async def aclose(self) -> None:
        self.noted.append("keeper closed")


def with_store(addon: Addon, events: list[str]) -> RecordingStore:
    store = RecordingStore(events)
    addon.shell.store = store
    addon.shell.resumer.reconfigure(store=store)
    return store


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait, on the running loop, until ``condition`` holds; fail past the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        if loop.time() > deadline:
            pytest.fail("the condition did not come to hold in time")
        await asyncio.sleep(lifecycle.FLUSH_EVERY)


def test_running_starts_the_store_says_the_settings_and_records_what_a_relay_holds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[str] = []

    async def scenario() -> None:
        addon = Addon()
        with taddons.context(addon) as tctx:
            tctx.configure(addon, sse_event_ttl=60)
            store = with_store(addon, events)
            with caplog.at_level(logging.INFO, "sse_resume"):
                addon.running()
            assert events == ["store started"] and addon.shell.running
            flow = sse_flow()
            await addon.request(flow)
            respond(addon, flow)
            assert flow.response is not None and callable(flow.response.stream)
            flow.response.stream(b"id: 1\ndata: one\n\n")  # the stream stays open: the relay holds its batch
            await until(lambda: [e.id for e in store.events(addon.shell.session_of(flow.request))] == ["1"])
            await addon.done()
        assert events == ["store started", "store closed"] and not addon.shell.running

    asyncio.run(scenario())
    assert [r.getMessage() for r in caplog.records if "settings" in r.getMessage()] == [
        "sse-resume: settings: sse_event_ttl=60 (option); every other at its default (the command sse.settings "
        "lists all)"
    ]


def test_open_flows_are_refreshed_on_the_flush_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifecycle, "LIVE_EVERY", 0.0)  # at every flush, not once a second
    refreshes: list[None] = []

    async def scenario() -> None:
        addon = Addon()
        piece = SSELifecycle(addon.shell, lambda: refreshes.append(None))
        with taddons.context(addon):
            piece.running()
            await until(lambda: len(refreshes) >= 2)
            await piece.done()
            timer = piece._flusher
            assert timer is not None
            await asyncio.gather(timer, return_exceptions=True)
            assert timer.cancelled()  # the timer stops with the proxy

    asyncio.run(scenario())


def test_at_the_end_the_keeper_closes_before_the_store() -> None:
    events: list[str] = []

    async def scenario() -> None:
        addon = Addon()
        with taddons.context(addon):
            with_store(addon, events)
            addon.running()
            addon.shell.keeper = cast(Keeper, RecordingKeeper(events))
            await addon.done()
        assert addon.shell.keeper is None

    asyncio.run(scenario())
    assert events == ["store started", "keeper closed", "store closed"]

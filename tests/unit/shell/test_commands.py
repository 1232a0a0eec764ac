"""The sse.* commands (addon/sse_resume_shell/_commands.py), in process, in the console and in mitmweb."""

from __future__ import annotations

import logging

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

import sse_resume_shell
from shell_harness import Addon, relay_through, sse_flow


def test_commands() -> None:
    addon = Addon()
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
        assert tctx.command(addon.clear_command) == "cleared 1 session"
        assert addon.store.snapshot().sessions == 0


def test_commands_in_mitmweb_answer_one_line_and_log_their_table(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    addon = Addon()
    caplog.set_level(logging.INFO, "sse_resume")
    with taddons.context(addon) as tctx:
        assert tctx.command(addon.history_command) == "no session held"  # (the console: as it is)
        relay_through(addon, sse_flow("/one"), [b"id: 1\ndata: a\n\nid: 2\ndata: bb\n\n"])
        table = tctx.command(addon.history_command).splitlines()  # the only session: no argument needed
        assert [row.split()[-1] for row in table[1:]] == ["'1'", "'2'"]
        monkeypatch.setattr(sse_resume_shell._commands, "_in_web", lambda: True)
        key = next(iter(addon.store))[:12]
        caplog.clear()
        assert tctx.command(addon.sessions_command) == f"1 session held: {key} (the table is in the event log)"
        logged = caplog.records[-1].getMessage().splitlines()
        assert logged[0] == "sse.sessions" and logged[1].split()[:2] == ["session", "streams"]
        assert logged[2].startswith(key)
        answer = tctx.command(addon.history_command)
        assert answer == f"session {key}: 2 events held, ids '1' to '2' (the table is in the event log)"
        assert tctx.command(addon.stats_command).startswith("sessions 1, events 2, hits 0, misses 0")
        relay_through(addon, sse_flow("/two"), [b"id: x\ndata: c\n\n"])
        assert tctx.command(addon.history_command).startswith("2 sessions held: name one, sse.history KEY")
        assert "\n" not in tctx.command(addon.settings_command)

"""The sse_* options (addon/sse_resume_shell/_options.py), in process: wrong values at startup and at run time,
config.yaml's sse: block, and the settings said with secrets hidden."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

from shell_harness import Addon, register_with_deferred
from sse_resume_core._config import Settings


def test_bad_option_at_run_time_is_rolled_back() -> None:
    addon = Addon()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, sse_event_ttl=60)
        assert addon.settings.event_ttl == 60
        with pytest.raises(exceptions.OptionsError, match="sse_event_ttl"):
            tctx.configure(addon, sse_event_ttl=0)
        assert addon.settings.event_ttl == 60 and tctx.options.sse_event_ttl == 60


# -- options: wrong types, unknown names, config.yaml's sse: block, optional packages, effective settings ---------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("sse_event_ttl=5x", "Failed to parse option sse_event_ttl: not an integer: 5x"),
        ("sse_max_event_history=abc", "Failed to parse option sse_max_event_history: not an integer: abc"),
        ("sse_support_replay=maybe", 'Failed to parse option sse_support_replay: boolean must be "true", "false"'),
        ("sse_session_header", "Option is required: sse_session_header"),  # a str option given no value
        ("sse_event_tll=5", "sse_event_tll: no such option (did you mean sse_event_ttl?)"),
    ],
)
def test_a_wrong_set_value_is_an_error_naming_it_and_the_others_apply(
    spec: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    addon = Addon()
    with taddons.context() as tctx, caplog.at_level(logging.ERROR):
        register_with_deferred(tctx, addon, spec, "sse_dedupe_window=7")
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and errors[0].startswith(f"sse-resume: invalid option: {message}")
        assert addon.settings.dedupe_window == 7  # the good value was applied, and the addon is configured
        assert not any(name.startswith("sse_") for name in tctx.options.deferred)


def test_multiple_values_for_an_optional_option_are_an_error(caplog: pytest.LogCaptureFixture) -> None:
    addon = Addon()
    with taddons.context() as tctx, caplog.at_level(logging.ERROR):
        register_with_deferred(tctx, addon, "sse_config=a.yaml", "sse_config=b.yaml")
    assert [r.getMessage() for r in caplog.records] == [
        "sse-resume: invalid option: Received multiple values for sse_config: ['a.yaml', 'b.yaml']"
    ]


def test_wrong_types_from_config_yaml_are_errors_without_their_values(caplog: pytest.LogCaptureFixture) -> None:
    addon = Addon()
    with taddons.context() as tctx, caplog.at_level(logging.ERROR):
        register_with_deferred(
            tctx, addon, sse_event_ttl="5x", sse_support_replay="maybe", sse_store_secret=12345, sse_config=["x"]
        )
    errors = sorted(r.getMessage() for r in caplog.records)
    assert len(errors) == 4
    for error, name in zip(
        errors, ["sse_config", "sse_event_ttl", "sse_store_secret", "sse_support_replay"], strict=True
    ):
        assert error.startswith(f"sse-resume: invalid option: {name}: Expected ") and "config.yaml" in error
    assert "12345" not in "".join(errors)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("sse_event_ttl", "5x"),
        ("sse_support_replay", "maybe"),
        ("sse_max_event_history", "abc"),
        ("sse_event_ttl", "0"),
    ],
)
def test_wrong_values_at_run_time_are_refused_and_the_old_value_kept(option: str, value: str) -> None:
    addon = Addon()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, sse_event_ttl=60, sse_support_replay=False, sse_max_event_history=50)
        before = addon.settings
        with pytest.raises(exceptions.CommandError, match=option):
            tctx.master.commands.execute(f"set {option} {value}")  # what mitmproxy's console and mitmweb run
        assert addon.settings == before
        assert (tctx.options.sse_event_ttl, tctx.options.sse_support_replay) == (60, False)
        assert tctx.options.sse_max_event_history == 50


def test_config_yaml_sse_block_is_applied_below_the_file_and_options(tmp_path: Path) -> None:
    file = tmp_path / "sse.yaml"
    file.write_text("sse:\n  stale_policy: restart\n")
    addon = Addon()
    block = {"client_resilience": {"event_ttl": 60, "max_event_history": 10}, "stale_policy": "forward"}
    with taddons.context() as tctx:
        register_with_deferred(tctx, addon, "sse_max_event_history=20", f"sse_config={file}", sse=block)
        s = addon.settings
        assert (s.event_ttl, s.max_event_history, s.stale_policy) == (60, 20, "restart")
        assert addon.sources["event_ttl"] == "config.yaml sse:" and addon.sources["stale_policy"] == "sse_config file"
        assert addon.sources["max_event_history"] == "option" and addon.sources["dedupe_window"] == "default"


@pytest.mark.parametrize(
    ("block", "message"), [({"event_ttl": 0}, "config.yaml: sse.event_ttl: Input"), ({"ttl": 5}, "unknown setting")]
)
def test_a_bad_config_yaml_sse_block_names_its_source(
    caplog: pytest.LogCaptureFixture, block: dict[str, object], message: str
) -> None:
    # At startup (the configure that follows the load) the error is one logged line, which stops mitmproxy.
    with taddons.context() as tctx, caplog.at_level(logging.ERROR):
        register_with_deferred(tctx, Addon(), sse=block)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith("sse-resume: invalid option: config.yaml: "), errors
    assert message in errors[0] and "Traceback" not in caplog.text


def test_an_invalid_value_at_startup_is_one_logged_line_and_the_addon_keeps_its_defaults(
    caplog: pytest.LogCaptureFixture,
) -> None:
    addon = Addon()
    with taddons.context() as tctx, caplog.at_level(logging.ERROR):
        register_with_deferred(tctx, addon, "sse_event_ttl=0", "sse_stale_policy=foo")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and all(e.startswith("sse-resume: invalid option: ") for e in errors), errors
    assert addon.settings == Settings()  # nothing of the invalid configuration was applied


def test_settings_command_and_startup_line_hide_secrets(caplog: pytest.LogCaptureFixture) -> None:
    addon = Addon()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, sse_event_ttl=60, sse_store_secret="hunter2")
        rows = {row.split()[0]: row.split()[1:] for row in tctx.command(addon.settings_command).splitlines()[1:]}
        assert rows["sse_event_ttl"] == ["60", "option"] and rows["sse_dedupe_window"] == ["100", "default"]
        assert rows["sse_store_secret"] == ["(set)", "option"] and rows["sse_config"] == ["(unset)", "option"]
        assert set(rows) == {f"sse_{name}" for name in Settings.model_fields} | {"sse_config"}

        async def start() -> None:
            with caplog.at_level(logging.INFO, "sse_resume"):
                addon.running()
            await addon.done()

        asyncio.run(start())
    lines = [r.getMessage() for r in caplog.records if "settings" in r.getMessage()]
    assert lines == [
        "sse-resume: settings: sse_event_ttl=60 (option), sse_store_secret=(set) (option); every other at its "
        "default (the command sse.settings lists all)"
    ]
    assert "hunter2" not in caplog.text

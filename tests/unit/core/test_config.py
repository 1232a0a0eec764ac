"""Settings: the documented YAML shape, validation messages, and which source wins."""

from __future__ import annotations

from pathlib import Path

import pytest

import sse_resume_core
from sse_resume_core._config import (
    BLOCK,
    DEFAULT,
    FILE,
    OPTION,
    ConfigError,
    FaultSettings,
    Settings,
    effective,
    fault_settings,
    load_file,
    merge,
    section_values,
    shown,
)

# (the checkout the tested package is in)
DOCS = Path(sse_resume_core.__file__).resolve().parents[2] / "docs"

DOCUMENTED_YAML = """\
sse:
  client_resilience:
    max_event_history: 1000
    event_ttl: 300
    support_replay: false
    dedupe_window: 100
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sse.yaml"
    path.write_text(text)
    return path


def test_the_documented_yaml_loads_as_written(tmp_path: Path) -> None:
    values = load_file(write(tmp_path, DOCUMENTED_YAML))
    assert values == {"max_event_history": 1000, "event_ttl": 300, "support_replay": False, "dedupe_window": 100}
    settings = merge(values, {})
    assert settings.support_replay is False and settings.limits().replay is False


def test_other_settings_by_option_name(tmp_path: Path) -> None:
    values = load_file(write(tmp_path, "sse:\n  stale_policy: restart\n  session_header: X-Session\n"))
    settings = merge(values, {})
    assert settings.stale_policy == "restart" and settings.session_header == "x-session"


def test_command_line_wins_over_file_and_file_over_defaults(tmp_path: Path) -> None:
    text = DOCUMENTED_YAML.replace("event_ttl: 300", "event_ttl: 60").replace(
        "max_event_history: 1000", "max_event_history: 50"
    )
    settings = merge(
        load_file(write(tmp_path, text)), {"event_ttl": 10, "max_event_history": 1000, "support_replay": True}
    )
    # event_ttl differs from its default on the command line: it wins. max_event_history and support_replay
    # are at their defaults there, so the file speaks for them; dedupe_window is in the file only.
    assert (settings.event_ttl, settings.max_event_history, settings.support_replay) == (10, 50, False)
    assert merge({}, {}).max_event_history == 1000  # (the default the file overrode)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sse:\n  client_resilience:\n    event_ttl: -1\n", "sse_config: sse.event_ttl: Input should be greater"),
        ("sse:\n  client_resilience:\n    ttl: 5\n", "sse_config: sse.client_resilience.ttl: Extra inputs"),
        ("sse:\n  bogus: 1\n", "sse_config: unknown setting(s) under sse: bogus"),
        ("sse: [1, 2]\n", "must be a mapping with an 'sse:' section"),
        ("sse: {unclosed\n", "is not valid YAML"),
        ("sse:\n  stale_policy: later\n", "sse_config: sse.stale_policy: Input should be 'forward' or 'restart'"),
    ],
)
def test_bad_files_name_the_file_and_the_reason(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        merge(load_file(write(tmp_path, text)), {})
    assert message in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sse_config: cannot read"):
        load_file(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("max_event_history", 0, "sse_max_event_history: Input should be greater than or equal to 1"),
        ("dedupe_window", -1, "sse_dedupe_window: Input should be greater than or equal to 0"),
        ("session_header", "a b", "sse_session_header: must be an HTTP header name"),
        ("max_event_bytes", 10, "sse_max_event_bytes: Input should be greater than or equal to 64"),
        ("store", "ftp://example", "sse_store: must be 'memory' or a redis://"),
        ("store_timeout", 0, "sse_store_timeout: Input should be greater than or equal to 1"),
    ],
)
def test_bad_options_name_the_option(name: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        merge({}, {name: value})
    assert message in str(info.value)


def test_defaults() -> None:
    s = Settings()
    assert (s.max_event_history, s.event_ttl, s.support_replay, s.dedupe_window) == (1000, 300, True, 100)
    assert (s.session_header, s.stale_policy, s.max_event_bytes) == ("mcp-session-id", "forward", 1024 * 1024)


def test_every_option_is_documented() -> None:
    doc = (DOCS / "options.md").read_text()
    for name in [*Settings.model_fields, "config"]:
        assert f"`sse_{name}`" in doc, name


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"keep_upstream": True, "support_replay": False}, "sse_keep_upstream needs sse_support_replay=true"),
        ({"assign_ids": True}, "sse_assign_ids works in keep mode only"),
        ({"keep_grace": -1}, "sse_keep_grace: Input should be greater than or equal to 0"),
        ({"max_replay_bytes": 10}, "sse_max_replay_bytes: Input should be greater than or equal to 1024"),
        (
            {"max_replay_bytes": 4096, "max_replay_bytes_in_flight": 2048},
            "sse_max_replay_bytes_in_flight must be at least sse_max_replay_bytes",
        ),
    ],
)
def test_keep_mode_settings_are_checked(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        merge({}, values)


def test_sources_say_where_each_value_came_from(tmp_path: Path) -> None:
    block = section_values({"client_resilience": {"event_ttl": 60}, "dedupe_window": 5}, "config.yaml")
    file_values = load_file(write(tmp_path, "sse:\n  dedupe_window: 7\n"))
    settings, sources = effective(file_values, {"max_sessions": 3, "event_ttl": 300}, block)
    assert (settings.event_ttl, settings.dedupe_window, settings.max_sessions) == (60, 7, 3)
    assert (sources["event_ttl"], sources["dedupe_window"], sources["max_sessions"]) == (BLOCK, FILE, OPTION)
    assert sources["stale_policy"] == DEFAULT and set(sources) == set(Settings.model_fields)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ([1, 2], "config.yaml: 'sse:' must be a mapping of settings, not list"),
        ({"bogus": 1}, "config.yaml: unknown setting(s) under sse: bogus"),
        ({"client_resilience": {"ttl": 5}}, "config.yaml: sse.client_resilience.ttl: Extra inputs"),
    ],
)
def test_a_bad_config_yaml_block_names_config_yaml(section: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        section_values(section, "config.yaml")
    assert str(info.value).startswith(message)


def test_a_bad_config_yaml_value_names_config_yaml() -> None:
    with pytest.raises(ConfigError, match=r"^config\.yaml: sse\.event_ttl: Input should be greater"):
        merge({}, {}, {"event_ttl": 0})


def test_shown_hides_secrets_and_passwords() -> None:
    settings = merge({}, {"store": "redis://user:hunter2@example:6379/0", "store_secret": "hunter3"})
    text = shown(settings)
    assert text["store"] == "redis://user:***@example:6379/0" and text["store_secret"] == "(set)"
    assert text["support_replay"] == "true" and text["event_ttl"] == "300"
    assert shown(Settings())["store_secret"] == "(unset)" and set(text) == set(Settings.model_fields)


def test_the_options_table_in_the_docs_is_the_models() -> None:
    """docs/options.md's table is made from the Settings model (`./dev options-table`): it says what the code does."""
    from sse_resume_core._config import documented_table, options_table

    docs = (DOCS / "options.md").read_text()
    assert documented_table(docs) == options_table(), "run ./dev options-table and commit docs/options.md"


def test_every_setting_is_a_mitmproxy_option_with_help_and_documentation() -> None:
    from sse_resume_core._config import Settings, mitmproxy_options

    options = mitmproxy_options()
    assert [name for name, *_ in options] == [f"sse_{name}" for name in Settings.model_fields]
    for name, typ, default, help_text in options:
        info = Settings.model_fields[name.removeprefix("sse_")]
        assert help_text and isinstance(info.json_schema_extra, dict) and info.json_schema_extra["doc"], name
        assert (default == info.default and typ in (bool, int, str)) or name == "sse_identity_headers", name


def test_every_fault_option_is_in_the_table_with_help_and_is_checked() -> None:
    from sse_resume_core._config import fault_mitmproxy_options, options_table

    options = fault_mitmproxy_options()
    assert [name for name, *_ in options] == [f"sse_fault_{name}" for name in FaultSettings.model_fields]
    for name, typ, default, help_text in options:
        info = FaultSettings.model_fields[name.removeprefix("sse_fault_")]
        assert help_text and isinstance(info.json_schema_extra, dict) and info.json_schema_extra["doc"], name
        assert default == info.default and typ in (int, str), name
        assert f"| `{name}` |" in options_table(), name
    assert not FaultSettings().active and fault_settings({"cut_every": 2}).active
    with pytest.raises(ConfigError) as error:
        fault_settings({"cut_after": -1, "stall_for": 0, "stall": 1})
    assert str(error.value) == (
        "sse_fault_cut_after: Input should be greater than or equal to 0; sse_fault_stall_for: Input should be "
        "greater than or equal to 1; sse_fault_stall: Extra inputs are not permitted"
    )

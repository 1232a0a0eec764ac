"""Invalid sse_ options stop a real mitmdump at startup with the option's name and the reason, whatever their kind.

Before, a wrong-typed value (``--set sse_event_ttl=5x``) unloaded the addon without a word: mitmdump ran on and
buffered SSE responses. An ``sse:`` block in mitmproxy's own config.yaml now applies, and the settings in effect
are logged at startup.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from harness import ADDON, BIN, Mitmdump, Process, curl, free_port

EXIT_DEADLINE = 120  # seconds: mitmdump takes a while to shut down on a loaded machine; a bug never exits at all


def run_until_exit(
    tmp: Path, args: Sequence[str], config_yaml: str = "", tool: Path = BIN / "mitmdump"
) -> tuple[int | None, str]:
    """Start mitmdump with the addon; return its exit status (None: still running at the deadline) and its output."""
    confdir = tmp / "confdir"
    confdir.mkdir(exist_ok=True)
    (confdir / "config.yaml").write_text(config_yaml)
    port = free_port()
    mitmdump: list[str | os.PathLike[str]] = [
        tool,
        "-s",
        ADDON,
        "--listen-host",
        "127.0.0.1",
        "--listen-port",
        str(port),
    ]
    proc = Process([*mitmdump, "--set", f"confdir={confdir}", *args], tmp / f"mitmdump-{port}.log")
    try:
        status: int | None = proc.proc.wait(EXIT_DEADLINE)
    except subprocess.TimeoutExpired:
        status = None
    finally:
        proc.stop()
    return status, proc.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "sse_event_ttl=5x"], "sse_event_ttl: not an integer: 5x"),  # int
        (["--set", "sse_max_event_history=abc"], "sse_max_event_history: not an integer: abc"),  # int
        (["--set", "sse_support_replay=maybe"], 'sse_support_replay: boolean must be "true", "false"'),  # bool
        (["--set", "sse_session_header"], "Option is required: sse_session_header"),  # str
        (["--set", "sse_config=a.yaml", "--set", "sse_config=b.yaml"], "multiple values for sse_config"),  # optional
        (["--set", "sse_event_tll=60"], "sse_event_tll: no such option (did you mean sse_event_ttl?)"),  # unknown
        (["--set", "sse_event_ttl=0"], "sse_event_ttl: Input should be greater than or equal to 1"),  # range
        (["--set", "sse_stale_policy=later"], "sse_stale_policy: Input should be 'forward' or 'restart'"),  # enum
        (["--set", "sse_session_header=bad header"], "sse_session_header: must be an HTTP header name"),  # checked
    ],
    ids=["int", "int2", "bool", "str", "optional", "unknown", "range", "enum", "checked"],
)
def test_an_invalid_set_value_stops_mitmdump_naming_it(tmp_path: Path, args: list[str], expected: str) -> None:
    status, output = run_until_exit(tmp_path, args)
    assert status == 1, output
    assert expected in output
    assert "sse-resume: invalid option: " in output and "Traceback" not in output  # one clear line, no traceback
    assert "logged during startup, exiting" in output


def test_wrong_types_in_config_yaml_stop_mitmdump_naming_each(tmp_path: Path) -> None:
    config = 'sse_event_ttl: "5x"\nsse_support_replay: maybe\nsse_session_header: [a, b]\nsse_store_secret: 123456\n'
    status, output = run_until_exit(tmp_path, [], config)
    assert status == 1, output
    for name in ("sse_event_ttl", "sse_support_replay", "sse_session_header", "sse_store_secret"):
        assert f"invalid option: {name}: Expected " in output, name
    assert "123456" not in output  # a value of the wrong type may still be a secret


def test_a_bad_sse_block_in_config_yaml_stops_mitmdump_naming_it(tmp_path: Path) -> None:
    status, output = run_until_exit(tmp_path, [], "sse:\n  client_resilience:\n    event_ttl: 0\n")
    assert status == 1, output
    assert "config.yaml: sse.event_ttl: Input should be greater than or equal to 1" in output


def test_an_sse_block_in_config_yaml_applies_and_the_settings_are_logged(tmp_path: Path, upstream_port: int) -> None:
    confdir = tmp_path / "confdir"
    confdir.mkdir()
    (confdir / "config.yaml").write_text("sse:\n  stale_policy: restart\n  client_resilience:\n    event_ttl: 60\n")
    with Mitmdump(tmp_path, upstream_port, [f"confdir={confdir}", "sse_store_secret=hunter2"]) as proxy:
        out, _ = curl(f"{proxy.url}/sse", "-i", "-H", "Last-Event-Id: ancient-id", stop_after=1)
        assert "sse-resume: miss" in out.lower()
        assert ": sse-resume: Last-Event-ID unknown: restarted the stream upstream" in out  # the block's policy
        logged = proxy.output
    line = next(line for line in logged.splitlines() if "sse-resume: settings:" in line)
    assert "sse_event_ttl=60 (config.yaml sse:)" in line and "sse_stale_policy=restart (config.yaml sse:)" in line
    assert "sse_store_secret=(set) (option)" in line and "hunter2" not in logged
    assert logged.count("sse-resume: settings:") == 1

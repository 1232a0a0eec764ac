"""The script mitmproxy loads (addon/sse_resume.py): the addons it lists, in their order."""

from __future__ import annotations

import sys

from shell_harness import ADDON, load, script


def test_the_script_lists_the_faults_after_the_resume_addon_hooked_up_to_its_flows() -> None:
    assert [type(a).__name__ for a in script.addons][-2:] == ["SSECommands", "SSEFaults"]
    resume = next(a for a in script.addons if type(a).__name__ == "SSEResume")
    assert script.addons[-1].flow_state.__self__ is resume.shell.flows  # type: ignore[attr-defined]


def test_the_script_lists_every_addon_in_the_order_their_hooks_run_around_one_shell() -> None:
    assert [type(a).__name__ for a in script.addons] == [
        "SSEOptions",  # first: the others' configure reads the settings it puts in effect
        "SSEView",
        "SSEMetrics",
        "SSELifecycle",
        "SSELiveFlows",
        "SSEKeep",
        "SSEResume",
        "SSESessionEnd",  # after SSEResume: a flow is said before its session's history goes
        "SSECommands",
        "SSEFaults",
    ]
    shells = {id(a.shell) for a in script.addons if hasattr(a, "shell")}
    assert len(shells) == 1 and len([a for a in script.addons if hasattr(a, "shell")]) == 8


def test_each_load_of_the_script_is_a_new_sse_resume_found_beside_it() -> None:
    again = load()
    assert again.addons[0].shell is not script.addons[0].shell
    assert str(ADDON.parent) == again.HERE and again.HERE in sys.path  # the packages beside the file

"""The script mitmproxy loads (addon/sse_resume.py): the addons it lists, in their order."""

from __future__ import annotations

from shell_harness import script


def test_the_script_lists_the_faults_after_the_resume_addon_hooked_up_to_its_flows() -> None:
    assert [type(a).__name__ for a in script.addons][-2:] == ["SSECommands", "SSEFaults"]
    resume = next(a for a in script.addons if type(a).__name__ == "SSEResume")
    assert script.addons[-1].flow_state.__self__ is resume.shell.flows  # type: ignore[attr-defined]

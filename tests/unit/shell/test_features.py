"""Optional packages and the check of deferred option values (addon/sse_resume_shell/_features.py): a missing
package is an option error naming the command that installs it, the packages are the project's extras, and values
mitmproxy deferred for our options are checked against every kind of option it has."""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import pytest
from mitmproxy import exceptions, optmanager
from mitmproxy.test import taddons

from shell_harness import ADDON, Addon
from sse_resume_shell import _features as features
from sse_resume_shell._features import deferred_errors


def hide_module(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make ``import name`` fail as it does where the package is not installed."""
    for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".") or m.startswith("sse_resume_redis")]:
        monkeypatch.delitem(sys.modules, loaded)
    monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize(
    ("option", "value", "module", "requirement"),
    [
        ("sse_store", "redis://127.0.0.1:1/0", "redis", "redis>=5.0"),
        ("sse_metrics_port", 1, "prometheus_client", "prometheus-client>=0.20"),
    ],
)
def test_a_missing_package_is_an_option_error_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch, option: str, value: object, module: str, requirement: str
) -> None:
    hide_module(monkeypatch, module)
    addon = Addon()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, sse_event_ttl=60)  # everything else works without the package
        with pytest.raises(exceptions.OptionsError) as info:
            tctx.configure(addon, **{option: value})
        assert addon.settings.event_ttl == 60 and addon.settings.store == "memory" and addon.settings.metrics_port == 0
    message = str(info.value)
    assert message.startswith(f"{option}: ") and f"needs the Python package {requirement}" in message
    assert message.endswith(f"install it with: {features.install_command(requirement)}")


def test_install_command_fits_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "mitmproxy"))
    monkeypatch.setattr(sys, "executable", "/opt/my python/bin/python")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    assert features.install_command("redis>=5.0") == "'/opt/my python/bin/python' -m pip install 'redis>=5.0'"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert features.install_command("redis>=5.0") == "uv pip install --python '/opt/my python/bin/python' 'redis>=5.0'"
    (tmp_path / "mitmproxy").mkdir()
    (tmp_path / "mitmproxy" / "pipx_metadata.json").write_text("{}")
    assert features.install_command("redis>=5.0") == "pipx inject mitmproxy 'redis>=5.0'"


def test_optional_packages_are_the_projects_extras() -> None:
    project = tomllib.loads((ADDON.parents[1] / "pyproject.toml").read_text())["project"]
    extras = {req for reqs in project["optional-dependencies"].values() for req in reqs}
    for _, requirement, _ in features.FEATURES.values():
        assert requirement in extras and requirement not in project["dependencies"]


def test_a_sequence_option_given_a_string_is_an_error() -> None:
    """The check covers every kind of option mitmproxy has, sequences too (none of ours is one yet)."""
    options = mitmproxy_options()
    options.update_defer(sse_names="authorization", sse_count="3")  # from config.yaml, before the addon loads
    options.add_option("sse_names", Sequence[str], [], "names")
    options.add_option("sse_count", Optional[int], None, "count")  # noqa: UP045 (mitmproxy wants typing.Optional)
    errors = sorted(deferred_errors(options, ["sse_names", "sse_count"]))
    assert [e.split(": ")[0] for e in errors] == ["sse_count", "sse_names"]
    assert all("config.yaml" in e for e in errors) and not options.deferred
    options = mitmproxy_options()
    options.set("sse_names=a", "sse_names=b", defer=True)  # from --set: always a list of strings, fine
    options.update_defer(sse_count=None)
    options.add_option("sse_names", Sequence[str], [], "names")
    options.add_option("sse_count", Optional[int], None, "count")  # noqa: UP045
    assert deferred_errors(options, ["sse_names", "sse_count"]) == []
    options.process_deferred()
    assert options.sse_names == ["a", "b"]


def mitmproxy_options() -> optmanager.OptManager:
    from mitmproxy import options

    return options.Options()


def test_the_deferred_check_skips_names_registered_later() -> None:
    options = optmanager.OptManager()
    options.set("sse_count=x", "sse_later=1", defer=True)
    options.add_option("sse_count", int, 0, "")
    assert deferred_errors(options, ["sse_count", "sse_later"]) == [
        "Failed to parse option sse_count: not an integer: x"
    ]
    assert "sse_later" in options.deferred

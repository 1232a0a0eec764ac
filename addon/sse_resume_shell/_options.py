"""The ``sse_*`` options: registered from the one table (the ``Settings`` model), checked, and put in effect."""

from __future__ import annotations

import logging
from typing import Optional

from mitmproxy import exceptions
from mitmproxy.addonmanager import Loader

from sse_resume_core._config import (
    DEFAULT,
    ConfigError,
    Settings,
    effective,
    load_file,
    mitmproxy_options,
    section_values,
    shown,
)
from sse_resume_shell._faults import FAULT_OPTIONS
from sse_resume_shell._features import FEATURES, deferred_errors, feature
from sse_resume_shell._shell import Shell

__all__ = ["NAMES", "SSEOptions", "settings_line"]

log = logging.getLogger("sse_resume")

NAMES = (*(f"sse_{name}" for name in Settings.model_fields), "sse_config")
"""The options this addon registers."""


class SSEOptions:
    """Registers the options, and turns them (with the sse_config file and config.yaml's ``sse:`` block) into the
    shell's settings. The other addons react to the new settings in their own ``configure``, which runs after."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        self._configured = False  # configure() ran once (the first follows the script's load)

    def load(self, loader: Loader) -> None:
        for name, typ, default, help_text in mitmproxy_options():  # (one table: the Settings model)
            loader.add_option(name, typ, default, help_text)
        loader.add_option(
            "sse_config",
            Optional[str],  # type: ignore[arg-type]  # noqa: UP045 (mitmproxy wants typing.Optional)
            None,
            "YAML file with settings under 'sse:' (the 'client_resilience' shape, or option names without sse_). "
            "Options given with --set win over the file.",
        )
        for error in deferred_errors(loader.master.options, NAMES, [*NAMES, *FAULT_OPTIONS]):
            # Logged as an error, which stops mitmdump, mitmproxy and mitmweb at startup ("Error logged during
            # startup"). Raising would not: mitmproxy's script loader drops an exception from here, and the addon.
            log.error("sse-resume: invalid option: %s", error)

    def configure(self, updated: set[str]) -> None:
        from mitmproxy import ctx

        options = ctx.options
        first, self._configured = not self._configured, True
        if not any(name.startswith("sse_") for name in updated):
            return
        try:
            # An "sse:" block in mitmproxy's config.yaml is no option: mitmproxy keeps it aside, unused, for good.
            block = section_values(options.deferred["sse"], "config.yaml") if "sse" in options.deferred else {}
            file_values = load_file(options.sse_config) if options.sse_config else {}
            settings, sources = effective(
                file_values, {name: getattr(options, f"sse_{name}") for name in Settings.model_fields}, block
            )
            for option in FEATURES:
                if getattr(settings, option) != Settings.model_fields[option].default:
                    feature(option)  # a missing package is refused before anything changes
        except (ConfigError, exceptions.OptionsError) as e:
            if first and not self.shell.running:
                # The configure that follows the script's load, at startup: an error raised here reaches the user
                # as a traceback ("error in script"); one logged is a clear line, and stops mitmproxy all the same
                # ("Error logged during startup"). Later, a value is refused and the old one kept.
                log.error("sse-resume: invalid option: %s", e)
                return
            raise exceptions.OptionsError(str(e)) from None  # type: ignore[no-untyped-call]
        self.shell.apply(settings)
        self.shell.sources = sources


def settings_line(shell: Shell) -> str:
    """The settings given a value (by a file, config.yaml's sse: block or an option), with their sources."""
    from mitmproxy import ctx

    changed = [
        f"sse_{name}={text} ({shell.sources.get(name, DEFAULT)})"
        for name, text in shown(shell.settings).items()
        if shell.sources.get(name, DEFAULT) != DEFAULT
    ]
    if ctx.options.sse_config:
        changed.insert(0, f"sse_config={ctx.options.sse_config} (option)")
    if not changed:
        return "settings: all at their defaults (the command sse.settings lists them)"
    return f"settings: {', '.join(changed)}; every other at its default (the command sse.settings lists all)"

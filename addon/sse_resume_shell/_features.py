"""Checks of what the options ask for before it applies: the packages only some options need (``FEATURES``), and
the values mitmproxy holds back for options not registered yet (``deferred_errors``), for every addon here."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import logging
import shlex
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from mitmproxy import exceptions, optmanager
from mitmproxy.utils import typecheck

__all__ = ["FEATURES", "deferred_errors", "feature", "install_command"]

log = logging.getLogger("sse_resume")

# Packages only some options need: option -> (module imported, what to install, the feature). Without them the
# addon loads and resumes with mitmproxy and pydantic alone; asking for the feature without its package is an
# option error that names the command installing it. (The requirements are pyproject.toml's extras.)
FEATURES: dict[str, tuple[str, str, str]] = {
    "store": ("sse_resume_redis", "redis>=5.0", "a Redis store"),
    "metrics_port": ("prometheus_client", "prometheus-client>=0.20", "the metrics endpoint"),
}


def install_command(requirement: str) -> str:
    """The command that installs ``requirement`` into the Python running this mitmproxy."""
    python = shlex.quote(sys.executable)
    quoted = shlex.quote(requirement)
    prefix = Path(sys.prefix)
    if (prefix / "pipx_metadata.json").is_file():  # a mitmproxy installed with pipx
        return f"pipx inject {shlex.quote(prefix.name)} {quoted}"
    if importlib.util.find_spec("pip") is not None:
        return f"{python} -m pip install {quoted}"
    return f"uv pip install --python {python} {quoted}"  # environments made by uv have no pip


def feature(option: str) -> ModuleType:
    """Import the package behind ``sse_<option>``; missing, an OptionsError naming the command that installs it."""
    module, requirement, what = FEATURES[option]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing = f"'{e.name}' is" if e.name and e.name != module else "it is"
        raise exceptions.OptionsError(  # type: ignore[no-untyped-call]
            f"sse_{option}: {what} needs the Python package {requirement}, and {missing} not installed in the "
            f"Python that runs mitmproxy ({sys.executable}): install it with: {install_command(requirement)}"
        ) from None


def deferred_errors(
    options: optmanager.OptManager, names: Iterable[str], every: Iterable[str] | None = None
) -> list[str]:
    """The wrong values mitmproxy holds for ``names`` until their addon registers them; each one is dropped.

    ``--set`` values (strings) and ``config.yaml`` values for options not yet registered wait in
    ``options.deferred``; mitmproxy converts them after the addon's ``load``, and an error there unloads the script
    without a word (mitmdump runs on, and SSE responses are buffered). Checked here instead, a wrong value is a
    message naming the option and the reason. Given ``every`` (all the ``sse_`` options of the script), an
    ``sse_`` name not among them is an error too (a typo would otherwise be ignored for good). The rest stay
    deferred for mitmproxy to apply.
    """
    mine = set(names)
    known = set(every) if every is not None else None
    errors: list[str] = []
    try:  # mitmproxy's internals: where they moved, its own conversion (silent on errors) is all there is
        registered, unconverted, parse = options._options, optmanager._UnconvertedStrings, options._parse_setval
    except AttributeError:
        if known is not None:  # (said once, by the addon that checks every name)
            log.warning("sse-resume: this mitmproxy's options cannot be checked before they apply")
        return errors
    for name, value in list(options.deferred.items()):
        if not name.startswith("sse_") or (name not in mine and (known is None or name in known)):
            continue  # (another addon's option, which that addon checks in its own load)
        try:
            if name not in mine:
                close = difflib.get_close_matches(name, sorted(known or ()), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise exceptions.OptionsError(f"{name}: no such option{hint}")  # type: ignore[no-untyped-call]
            option = registered.get(name)
            if option is None:  # not registered (yet): mitmproxy applies it, or says it is unknown
                continue
            if isinstance(value, unconverted):  # from --set
                value = parse(option, value.val)
            typecheck.check_option_type(name, value, option.typespec)
        except exceptions.OptionsError as e:
            del options.deferred[name]
            errors.append(str(e))
        except TypeError as e:  # a value of another type, from a YAML file (its value may be a secret: not shown)
            del options.deferred[name]
            errors.append(f"{name}: {e} (from mitmproxy's config.yaml)")
    return errors

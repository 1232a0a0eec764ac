"""The shell in process, for the unit tests: the addons of addon/sse_resume.py as mitmproxy would call them, with
mitmproxy's test helpers (tflow, taddons)."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from mitmproxy import hooks
from mitmproxy.http import HTTPFlow
from mitmproxy.test import taddons, tflow, tutils

import sse_resume_shell

ADDON = Path(__file__).resolve().parents[2] / "addon" / "sse_resume.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sse_resume_script", ADDON)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


script = load()


class Addon:
    """The addons of addon/sse_resume.py but fault injection, as one object for a test: a hook called on it is
    called on each of them in the script's order, as mitmproxy does; any other attribute is the shared state's
    (the Shell) or the first piece's that has it. (mitmproxy, given this object, calls its pieces' hooks itself.)"""

    def __init__(self) -> None:
        self.shell = sse_resume_shell.Shell()
        self.addons = sse_resume_shell.resume_addons(self.shell)

    def _each(self, hook: str, *args: object) -> list[object]:
        return [getattr(a, hook)(*args) for a in self.addons if hasattr(a, hook)]

    async def request(self, flow: HTTPFlow) -> None:
        for result in self._each("request", flow):
            if asyncio.iscoroutine(result):
                await result

    def responseheaders(self, flow: HTTPFlow) -> None:
        self._each("responseheaders", flow)

    def response(self, flow: HTTPFlow) -> None:
        self._each("response", flow)

    def error(self, flow: HTTPFlow) -> None:
        self._each("error", flow)

    def client_disconnected(self, client: object) -> None:
        self._each("client_disconnected", client)

    def running(self) -> None:
        self._each("running")

    async def done(self) -> None:
        for a in self.addons:
            if hasattr(a, "done") and asyncio.iscoroutine(result := a.done()):
                await result

    def __getattr__(self, name: str) -> Any:
        if name in hooks.all_hooks or name.startswith("__") or name in ("name", "addons", "shell"):
            raise AttributeError(name)  # (so that mitmproxy finds the pieces' hooks, not these)
        for holder in (self.shell, *self.addons):
            if hasattr(holder, name):
                return getattr(holder, name)
        raise AttributeError(name)


def sse_flow(path: str = "/sse", last_event_id: str | None = None) -> HTTPFlow:
    flow = tflow.tflow()
    flow.request.path = path
    flow.request.headers["accept"] = "text/event-stream"
    if last_event_id is not None:
        flow.request.headers["last-event-id"] = last_event_id
    return flow


def respond(addon: object, flow: HTTPFlow) -> None:
    flow.response = tutils.tresp(content=None)
    flow.response.headers["content-type"] = "text/event-stream"
    addon.responseheaders(flow)  # type: ignore[attr-defined]


def run(chunks: list[bytes], flow: HTTPFlow) -> list[object]:
    assert flow.response is not None and callable(flow.response.stream)
    return [flow.response.stream(c) for c in chunks]


def relay_through(addon: object, flow: HTTPFlow, chunks: list[bytes], end: bool = True) -> None:
    asyncio.run(addon.request(flow))  # type: ignore[attr-defined]
    respond(addon, flow)
    run(chunks + ([b""] if end else []), flow)
    if end:
        addon.response(flow)  # type: ignore[attr-defined]
    else:
        addon.error(flow)  # type: ignore[attr-defined]


def register_with_deferred(tctx: taddons.context, addon: object, *specs: str, **yaml_values: object) -> None:
    """Register the addon as mitmproxy does at startup: --set specs and config.yaml values wait, deferred, for it."""
    tctx.options.set(*specs, defer=True)
    tctx.options.update_defer(**yaml_values)
    tctx.master.addons.register(addon)  # load, then mitmproxy's own conversion of the deferred values
    tctx.master.addons.invoke_addon_sync(addon, hooks.ConfigureHook(set(tctx.options.keys())))  # as its loader does

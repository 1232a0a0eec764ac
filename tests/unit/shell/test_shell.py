"""The state the addons share (addon/sse_resume_shell/_shell.py): the session a request belongs to, and what
changing the settings keeps."""

from __future__ import annotations

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

from shell_harness import Addon, relay_through, sse_flow


def test_changing_limits_keeps_history_and_changing_mode_starts_afresh() -> None:
    addon = Addon()
    with taddons.context(addon) as tctx:
        relay_through(addon, sse_flow(), [b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n"])
        tctx.configure(addon, sse_max_event_history=1)
        assert [e.id for e in addon.store.events(next(iter(addon.store)))] == ["2"]
        tctx.configure(addon, sse_support_replay=False)
        assert addon.store.snapshot().events == 0 and addon.store.limits.replay is False


def test_long_store_secrets_key_the_session_digests() -> None:
    """A secret of any length (BLAKE2b keys stop at 64 bytes) keys session keys; two proxies agree on them."""
    keys = []
    for _ in range(2):
        addon = Addon()
        with taddons.context(addon) as tctx:
            tctx.configure(addon, sse_store="redis://127.0.0.1:1/0", sse_store_secret="s" * 4000)
            keys.append(addon.shell.session_of(sse_flow().request))
    assert keys[0] == keys[1]
    other = Addon()
    with taddons.context(other) as tctx:
        tctx.configure(other, sse_store="redis://127.0.0.1:1/0", sse_store_secret="another")
        assert other.shell.session_of(sse_flow().request) != keys[0]


def test_credential_headers_and_the_option_make_the_session() -> None:
    """The shell hands every header to the core's identity rule, and the option's patterns with it."""

    def session(addon: object, headers: dict[str, str]) -> str:
        flow = sse_flow()
        for name, value in headers.items():
            flow.request.headers[name] = value
        return addon.shell.session_of(flow.request)  # type: ignore[attr-defined,no-any-return]

    addon = Addon()
    with taddons.context(addon) as tctx:
        alice = session(addon, {"X-API-Key": "alice"})
        assert alice == session(addon, {"x-api-key": "alice", "user-agent": "other"})
        assert alice != session(addon, {"X-API-Key": "mallory"}) != session(addon, {})
        assert session(addon, {"X-Zone": "a"}) == session(addon, {"X-Zone": "b"})
        tctx.configure(addon, sse_identity_headers=["x-zone", "!x-api-key"])
        assert session(addon, {"X-Zone": "a"}) != session(addon, {"X-Zone": "b"})
        assert session(addon, {"X-API-Key": "alice"}) == session(addon, {"X-API-Key": "mallory"})
        with pytest.raises(exceptions.OptionsError, match="sse_identity_headers"):
            tctx.configure(addon, sse_identity_headers=["x tenant"])

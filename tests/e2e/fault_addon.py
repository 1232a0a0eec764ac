"""Test-only: breaks the sse-resume addon on purpose inside a running mitmdump.

    mitmdump -s addon/sse_resume.py -s tests/e2e/fault_addon.py --set fault_record_at=5

``fault_record_at=N`` makes the write of the N-th event to the history raise (one at a time or in a batch);
``fault_decide_id=X`` makes the resume decision for ``Last-Event-ID: X`` raise; ``fault_parse_at=N`` makes the
parser raise on the N-th block it reads line by line (a bug in it, as when a huge ``retry`` made it raise). Each
fault fires once, so a test can see the addon recover.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from mitmproxy import ctx
from mitmproxy.addonmanager import Loader

log = logging.getLogger("fault_addon")


def find_addon(chain: Iterable[Any], class_name: str) -> Any:
    for addon in chain:
        if type(addon).__name__ == class_name:
            return addon
        found = find_addon(getattr(addon, "addons", None) or [], class_name)
        if found is not None:
            return found
    return None


class Fault:
    def load(self, loader: Loader) -> None:
        loader.add_option("fault_record_at", int, 0, "Make the N-th history write raise (0: never).")
        loader.add_option("fault_decide_id", str, "", "Make the decision for this Last-Event-ID raise.")
        loader.add_option("fault_parse_at", int, 0, "Make the parser raise on the N-th block read line by line.")

    def running(self) -> None:
        target = find_addon(ctx.master.addons.chain, "SSEResume")
        assert target is not None, "load addon/sse_resume.py first"
        record_at = ctx.options.fault_record_at
        decide_id = ctx.options.fault_decide_id
        if record_at:
            store = target.shell.store
            real_record = store.record
            calls = 0

            def record(*args: Any) -> Any:
                nonlocal calls
                calls += 1
                if calls == record_at:
                    raise RuntimeError("forced fault in the history store")
                return real_record(*args)

            real_record_many = store.record_many

            def record_many(session: str, stream: str, ids: list[Any], raws: list[bytes]) -> Any:
                nonlocal calls
                calls += len(ids)
                if calls - len(ids) < record_at <= calls:
                    raise RuntimeError("forced fault in the history store")
                return real_record_many(session, stream, ids, raws)

            store.record = record
            store.record_many = record_many
        if decide_id:
            resumer = target.shell.resumer
            real_decide = resumer.decide
            fired = False

            async def decide(session: str, last_event_id: str | None, inline: bool = False) -> Any:
                nonlocal fired
                if last_event_id == decide_id and not fired:
                    fired = True
                    raise RuntimeError("forced fault in the resume decision")
                return await real_decide(session, last_event_id, inline)

            resumer.decide = decide
        parse_at = ctx.options.fault_parse_at
        if parse_at:
            from sse_resume_core._parser import Block, SSEParser

            real_block = SSEParser._block
            blocks = 0

            def block(parser: SSEParser, raw: bytes, lines: list[bytes]) -> Block:
                nonlocal blocks
                blocks += 1
                if blocks == parse_at:
                    raise RuntimeError("forced fault in the parser")
                return real_block(parser, raw, lines)

            setattr(SSEParser, "_block", block)  # noqa: B010 (a method replaced on the class, for every parser)
        log.info("fault_addon: armed (record_at=%d, decide_id=%r, parse_at=%d)", record_at, decide_id, parse_at)


addons = [Fault()]

"""The history store's life in a running proxy: started with it, flushed on a timer, closed at its end."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sse_resume_shell._options import settings_line
from sse_resume_shell._shell import Shell

__all__ = ["FLUSH_EVERY", "LIVE_EVERY", "SSELifecycle"]

log = logging.getLogger("sse_resume")

FLUSH_EVERY = 0.05  # seconds: the longest an event relayed waits to be recorded (see Relay.flush)
LIVE_EVERY = 0.95  # seconds, at least, between two refreshes of open flows: about once a second, on the flush timer
# (never more than a second apart while the loop keeps time; see SSELiveFlows.refresh)


class SSELifecycle:
    """Starts the store when the proxy runs, records what relays hold back every ``FLUSH_EVERY`` (and calls
    ``refresh`` about once a second, for the open flows), and closes the keeper, then the store, at the end."""

    def __init__(self, shell: Shell, refresh: Callable[[], None]) -> None:
        self.shell = shell
        self._refresh = refresh
        self._flusher: asyncio.Task[None] | None = None

    def running(self) -> None:
        log.info("sse-resume: %s", settings_line(self.shell))
        self.shell.store.start()  # a remote store connects now: one that cannot be reached shows in the log at start
        self.shell.running = True
        self._flusher = asyncio.get_running_loop().create_task(self._flush_every(FLUSH_EVERY))

    async def _flush_every(self, seconds: float) -> None:
        """Relays record in batches; this records what a slow stream holds back, so it is soon in history. About
        once a second (LIVE_EVERY), open flows whose transcripts grew are shown anew (with sse_live_flows)."""
        loop = asyncio.get_running_loop()
        shown = loop.time()
        while True:
            await asyncio.sleep(seconds)
            self.shell.resumer.flush()  # (every resumer shares one set of relays to flush; a flush never raises)
            if loop.time() - shown >= LIVE_EVERY:
                shown = loop.time()
                self._refresh()

    async def done(self) -> None:
        shell = self.shell
        shell.running = False
        if self._flusher is not None:
            self._flusher.cancel()
        shell.resumer.flush()
        if shell.keeper is not None:  # (it records into the store: it closes first)
            await shell.keeper.aclose()
            shell.keeper = None
        await shell.store.aclose()  # a remote store writes what is still queued, for a second at most
